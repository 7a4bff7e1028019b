"""What a study is, how it runs through the results store and what it reports.

A study is a list of configs (its sweep) and an analysis of their stored results. It runs with
:func:`giantstep.sweep.run_sweep` into a results store, so a study that is killed finishes where
it stopped when rerun (finished runs are skipped, a run's key is its config: no duplicate rows),
and its findings are computed from what the store holds — the same numbers whether the runs were
made now or earlier.

A finding is a measured number — the mean over seeds, with its standard deviation — and, where
a theory gives one, the prediction beside it (``None``, printed "—", where there is none).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Table

from giantstep.config import validate_config
from giantstep.files import atomic_path
from giantstep.store import OK, Store, flatten_config, library_version, run_key
from giantstep.sweep import PlannedRun, run_sweep


@dataclass(frozen=True)
class Finding:
    """One measured number over ``seeds`` seeds (mean and standard deviation), and the theory.

    ``group`` names the setting (e.g. ``rademacher, coordinates, d = 500``), ``quantity`` what
    is measured (``spikes``, ``cos(update, β)``, ``test error``...).
    """

    group: str
    quantity: str
    measured: float | None
    spread: float | None
    seeds: int
    predicted: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return dict(self.__dict__)


@dataclass
class StudyReport:
    """A study's findings, its conclusions in words, the figures written and what ran."""

    name: str
    findings: list[Finding] = field(default_factory=list)
    conclusions: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    runs: int = 0
    ran_now: int = 0
    seconds: float = 0.0
    store: Path | None = None

    def table(self) -> Table:
        """The findings as a rich table."""
        table = Table(title=f"{self.name}: findings (mean ± sd over seeds)")
        notes = any(f.note for f in self.findings)
        columns = ("setting", "quantity", "measured", "± sd", "seeds", "theory")
        for column in columns + (("note",) if notes else ()):
            table.add_column(column)
        for f in self.findings:
            cells = [
                escape(f.group), escape(f.quantity), number(f.measured), number(f.spread),
                str(f.seeds), number(f.predicted),
            ]  # fmt: skip
            table.add_row(*cells, *((escape(f.note),) if notes else ()))
        return table

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "name": self.name,
            "runs": self.runs,
            "ran_now": self.ran_now,
            "seconds": self.seconds,
            "store": str(self.store) if self.store else None,
            "figures": [str(p) for p in self.figures],
            "findings": [f.to_dict() for f in self.findings],
            "conclusions": self.conclusions,
        }


def number(value: float | None) -> str:
    """A finding's number for a table: 4 significant digits, "—" when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4g}"


@dataclass(frozen=True)
class Row:
    """One stored run: its config (dotted keys), status, metrics and arrays."""

    config: dict[str, Any]
    status: str
    metrics: dict[str, Any]
    arrays: dict[str, Any]
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the run finished."""
        return self.status == OK

    def get(self, name: str, default: Any = None) -> Any:
        """A metric (or array) by its dotted name, ``default`` if absent, None or not finite."""
        value = self.metrics.get(name, self.arrays.get(name, default))
        if value is None:
            return default
        if isinstance(value, str) and value in ("inf", "-inf", "nan"):
            return default
        return value

    def predicted_test_error(self, ridge_index: int = 0) -> float | None:
        """The error theory's test error at ridge ``ridge_index``, if the run carries one.

        Read from ``predicted_errors`` (``giantstep.theory.errors``): random features for
        ``T = 0``, the spiked model after a step; None when the field is absent or the theory
        is out of its regime (non-Gaussian inputs, several steps, rank > 1...).
        """
        variant = "random_features" if self.config.get("train.steps") == 0 else "spiked"
        value = self.get(f"predicted_errors.{variant}.errors.{ridge_index}.test_error")
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Study:
    """A named study: its configs at quick or default sizes, and the analysis of their rows.

    ``analyse(rows, quick, out)`` gets one :class:`Row` per config, in order, and returns the
    report's findings, conclusions and figures.
    """

    name: str
    summary: str
    configs: Callable[[bool], list[dict[str, Any]]]
    analyse: Callable[[list[Row], bool, Path], tuple[list[Finding], list[str], list[Path]]]


def plan(configs: Iterable[dict[str, Any]]) -> list[PlannedRun]:
    """The configs as sweep runs (validated, keyed); a config named twice is run once."""
    version = library_version()
    runs, seen = [], set()
    for data in configs:
        config = validate_config(data)
        key = run_key(config, version)
        if key not in seen:
            seen.add(key)
            runs.append(PlannedRun(len(runs), {}, config, key))
    return runs


def run_study(
    study: Study,
    *,
    quick: bool,
    out: Path,
    store_path: Path | None = None,
    executor: Any = None,
    callback: Any = None,
) -> StudyReport:
    """Run ``study``'s sweep into the store (skipping what is there) and analyse the rows."""
    started = time.perf_counter()
    out = Path(out)
    store_path = Path(store_path) if store_path else out / f"{study.name}.sqlite"
    configs = study.configs(quick)
    runs = plan(configs)
    keys = [run_key(validate_config(c)) for c in configs]
    with Store(store_path) as store:
        summary = run_sweep(
            runs, store, executor=executor, callback=callback, name=f"study {study.name}",
            wait_for_others=True,  # the analysis needs them all (a KeyError before)
        )  # fmt: skip
        stored = {r.key: r for r in store.runs()}
        rows = [
            Row(
                flatten_config(stored[k].config),
                stored[k].status,
                stored[k].metrics,
                store.arrays(k),
                stored[k].error,
            )
            for k in keys
        ]
    findings, conclusions, figures = study.analyse(rows, quick, out)
    return StudyReport(
        study.name, findings, conclusions, figures, len(runs), summary.done,
        time.perf_counter() - started, store_path,
    )  # fmt: skip


def over_seeds(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, standard deviation, count) of the finite values; (None, None, 0) if none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return None, None, 0
    spread = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return float(np.mean(finite)), spread, len(finite)


def finding(
    group: str,
    quantity: str,
    rows: list[Row],
    measure: Callable[[Row], float | None],
    predicted: Callable[[Row], float | None] | None = None,
    note: str = "",
) -> Finding:
    """A finding over ``rows`` (the seeds of one setting): mean ± sd of ``measure``, and the
    mean of ``predicted`` where every row has one."""
    mean, spread, count = over_seeds(measure(r) for r in rows if r.ok)
    prediction = None
    if predicted is not None:
        values = [predicted(r) for r in rows if r.ok]
        if values and all(v is not None for v in values):
            prediction = float(np.mean(values))
    return Finding(group, quantity, mean, spread, count, prediction, note)


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """Write a study's figure as PNG (120 dpi) and PDF, atomically; close it; the two paths."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = []
    try:
        for suffix in (".png", ".pdf"):
            path = Path(out) / f"{name}{suffix}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=120)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def group_by(rows: list[Row], *keys: str) -> dict[tuple, list[Row]]:
    """Rows grouped by the values of config ``keys`` (typically all but the seed), in order."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault(tuple(r.config.get(k) for k in keys), []).append(r)
    return groups
