"""Sweeps: a base config and a grid of dotted keys, expanded into runs, stored as they finish.

A sweep file (TOML)::

    name = "cosine-vs-n"            # optional, recorded with each run
    base_file = "experiment.toml"   # optional, relative to the sweep file
    [base]                          # config tables, applied over base_file
    dim = 200
    [grid]                          # dotted key -> list of values; the runs are the product
    "train.batch_size" = [200, 400, 800]
    seed = [0, 1, 2]
    [[zip]]                         # optional: keys varied together (lists of equal length),
    "train.step_size.scale" = [1.0, 2.0]   # one axis of the product
    "readout.samples" = [512, 1024]

Every config is validated before any run starts. Runs already in the store (``ok``, or
``diverged``: see ``giantstep.store``) are skipped. Only the parent process writes to the
store, one transaction per finished run, so ``kill -9`` loses only the runs in flight.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giantstep.config import (
    ConfigError,
    ExperimentConfig,
    read_toml,
    set_dotted,
    validate_config,
)
from giantstep.store import FINAL, Store, library_version, run_key

_SWEEP_KEYS = {"name", "base", "base_file", "grid", "zip"}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its grid values, its validated config and its store key."""

    index: int
    values: dict[str, Any]
    config: ExperimentConfig
    key: str

    def label(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.values.items()) or "base"


@dataclass
class Sweep:
    """A parsed sweep file: ``axes`` is a list of (keys, value tuples), product taken in order."""

    name: str | None
    base: dict[str, Any]
    axes: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = field(default_factory=list)

    def expand(self) -> list[PlannedRun]:
        """All runs, every config validated (ConfigError naming the run and the key)."""
        version = library_version()
        runs: list[PlannedRun] = []
        seen: set[str] = set()
        value_lists = [values for _, values in self.axes]
        for combo in itertools.product(*value_lists):
            values: dict[str, Any] = {}
            for (keys, _), vals in zip(self.axes, combo, strict=True):
                values.update(zip(keys, vals, strict=True))
            data = copy.deepcopy(self.base)
            for key, value in values.items():
                set_dotted(data, key, value)
            try:
                config = validate_config(data)
            except ConfigError as err:
                where = ", ".join(f"{k}={v!r}" for k, v in values.items())
                raise ConfigError(f"run with {where or 'the base config'}: {err}") from None
            key = run_key(config, version)
            if key in seen:  # the grid names the same experiment twice
                continue
            seen.add(key)
            runs.append(PlannedRun(len(runs), values, config, key))
        return runs


def _known_key(key: str) -> bool:
    """Whether dotted ``key`` names a field of ExperimentConfig (a leaf or a section)."""
    model: Any = ExperimentConfig
    for part in key.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) else None
    return True


def _flatten_axes(table: Any, where: str, prefix: str = "") -> dict[str, list]:
    """``{"train": {"batch_size": [..]}}`` -> ``{"train.batch_size": [..]}``; leaves are lists."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of dotted keys to lists of values")
    out: dict[str, list] = {}
    for k, v in table.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten_axes(v, where, name))
        elif isinstance(v, list):
            if not v:
                raise ConfigError(f"{where}.{name}: empty list of values")
            out[name] = v
        else:
            raise ConfigError(
                f"{where}.{name}: expected a list of values (got {v!r}); write [{v!r}]"
            )
    return out


def parse_sweep(data: dict[str, Any], base_dir: Path | None = None) -> Sweep:
    """A Sweep from the tables of a sweep file; raises ConfigError naming the bad key."""
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise ConfigError(
            f"sweep file: unknown key {unknown[0]!r} (expected {', '.join(sorted(_SWEEP_KEYS))})"
        )
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"name: expected a string (got {name!r})")
    base: dict[str, Any] = {}
    if "base_file" in data:
        path = Path(data["base_file"])
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        base = read_toml(path)
    extra = data.get("base", {})
    if not isinstance(extra, dict):
        raise ConfigError("base: expected a table of config keys")
    for key, value in _flatten_base(extra).items():
        set_dotted(base, key, value)

    axes: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
    used: dict[str, str] = {}

    def claim(key: str, where: str) -> None:
        if not _known_key(key):
            raise ConfigError(f"{where}.{key}: unknown config key")
        if key in used:
            raise ConfigError(f"{where}.{key}: already varied in {used[key]}")
        used[key] = where

    for key, values in _flatten_axes(data.get("grid", {}), "grid").items():
        claim(key, "grid")
        axes.append(((key,), [(v,) for v in values]))
    groups = data.get("zip", [])
    if isinstance(groups, dict):
        groups = [groups]
    if not isinstance(groups, list):
        raise ConfigError("zip: expected a table or an array of tables")
    for i, group in enumerate(groups):
        where = f"zip[{i}]"
        flat = _flatten_axes(group, where)
        if not flat:
            raise ConfigError(f"{where}: empty")
        lengths = {k: len(v) for k, v in flat.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{where}: the lists must have equal lengths (got {lengths})")
        for key in flat:
            claim(key, where)
        keys = tuple(flat)
        axes.append((keys, list(zip(*(flat[k] for k in keys), strict=True))))
    if not axes:
        raise ConfigError("grid: empty (give at least one key with a list of values)")
    return Sweep(name=name, base=base, axes=axes)


def _flatten_base(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten_base(v, name))
        else:
            out[name] = v
    return out


def load_sweep(path: str | Path) -> Sweep:
    """Parse a sweep file; raises ConfigError naming the file and the bad key."""
    path = Path(path)
    data = read_toml(path)
    try:
        return parse_sweep(data, path.parent)
    except ConfigError as err:
        raise ConfigError(f"sweep file {path}: {err}") from None


# -- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What came back from one run: a result dict, or an error (``diverged`` if it diverged)."""

    result: dict[str, Any] | None = None
    error: str | None = None
    diverged: bool = False


def execute(config: dict[str, Any]) -> Outcome:
    """Run one config (plain JSON data) and never raise: errors come back as data.

    Runs in the worker (a process of the pool or a Dask worker); the parent stores the outcome.
    """
    from giantstep.experiment import run
    from giantstep.train import DivergenceError

    try:
        result = run(config)
    except DivergenceError as err:
        return Outcome(error=str(err), diverged=True)
    except Exception as err:  # noqa: BLE001 - any failure is recorded, the sweep goes on
        tail = traceback.format_exc(limit=3)
        return Outcome(error=f"{type(err).__name__}: {err}\n{tail}")
    return Outcome(result=result.model_dump(mode="json"))


@dataclass
class SweepSummary:
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0


#: Called by the parent once before the first run (run and outcome None) and after each stored
#: run: (summary so far, the run, its outcome).
Callback = Callable[[SweepSummary, PlannedRun | None, Outcome | None], object]


def cores() -> int:
    """The cores this process may use (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _watch_parent(parent: int) -> None:
    """In a pool worker: exit when the parent dies (kill -9 leaves no orphan running)."""

    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True).start()


def _in_process(runs: list[PlannedRun]) -> Iterator[tuple[PlannedRun, Outcome]]:
    for planned in runs:
        yield planned, execute(planned.config.model_dump(mode="json"))


#: Thread-count variables of the BLAS libraries numpy may use.
_BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _processes(runs: list[PlannedRun], workers: int) -> Iterator[tuple[PlannedRun, Outcome]]:
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    # Each worker gets its share of the cores for BLAS (unless the user set the count): K
    # workers each running as many BLAS threads as cores oversubscribe the machine, several
    # times slower. The count is read when BLAS loads, hence fresh (spawned) workers, started
    # with these variables in their environment.
    share = str(max(1, cores() // workers))
    added = [v for v in _BLAS_THREADS if v not in os.environ]
    os.environ.update({v: share for v in added})
    # A few runs queued per worker: enough to keep them busy, few to redo after a crash.
    pending = iter(runs)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_watch_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures: dict[Any, PlannedRun] = {}

        def fill() -> None:
            for planned in itertools.islice(pending, max(0, 2 * workers - len(futures))):
                futures[pool.submit(execute, planned.config.model_dump(mode="json"))] = planned

        fill()
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                planned = futures.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as err:
                    outcome = Outcome(error=f"worker process died: {err}")
                yield planned, outcome
            fill()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for v in added:
            os.environ.pop(v, None)


def connect(scheduler: str, timeout: float = 10.0):
    """A Dask client for ``scheduler``; raises ConfigError naming it if it cannot be reached."""
    from giantstep.distributed import connect as dask_connect

    return dask_connect(scheduler, timeout)


def _dask(runs: list[PlannedRun], client) -> Iterator[tuple[PlannedRun, Outcome]]:
    from distributed import as_completed

    futures = {}
    for planned in runs:
        # The run's key as the task key: a worker lost mid-run has its tasks rerun by Dask.
        future = client.submit(
            execute, planned.config.model_dump(mode="json"), key=f"giantstep-{planned.key}"
        )
        futures[future] = planned
    for future in as_completed(futures):
        planned = futures[future]
        try:
            outcome = future.result()
        except Exception as err:  # noqa: BLE001 - e.g. KilledWorker after repeated losses
            outcome = Outcome(error=f"{type(err).__name__}: {err}")
        future.release()
        yield planned, outcome


def run_sweep(
    sweep: Sweep | list[PlannedRun],
    store: Store,
    executor: str = "processes",
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    retry: bool = False,
    callback: Callback | None = None,
    name: str | None = None,
) -> SweepSummary:
    """Run the sweep's runs not yet in ``store``; store each as it finishes.

    executor: ``"inprocess"``, ``"processes"`` (``workers`` processes, default the cores) or
    ``"dask"`` (``client``, or a new client for ``scheduler``). ``retry`` also reruns
    ``diverged`` runs (``failed`` ones are always rerun). ``name`` is recorded with each run
    (default: the sweep's own).
    """
    started = time.perf_counter()
    runs = sweep.expand() if isinstance(sweep, Sweep) else list(sweep)
    if name is None and isinstance(sweep, Sweep):
        name = sweep.name
    if executor != "dask":
        from giantstep.experiment import check_memory

        for planned in runs:  # before any run: a config that cannot fit here stops the sweep
            try:
                check_memory(planned.config)
            except ConfigError as err:
                raise ConfigError(f"run with {planned.label()}: {err}") from None
    status = store.status(p.key for p in runs)
    keep = (FINAL[0],) if retry else FINAL
    todo = [p for p in runs if status.get(p.key) not in keep]
    summary = SweepSummary(total=len(runs), skipped=len(runs) - len(todo))
    if callback:
        callback(summary, None, None)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary

    own_client = None
    if executor == "dask":
        if client is None:
            if scheduler is None:
                raise ConfigError("--scheduler: the dask executor needs a scheduler address")
            client = own_client = connect(scheduler)
        stream: Iterable[tuple[PlannedRun, Outcome]] = _dask(todo, client)
    elif executor == "processes":
        stream = _processes(todo, workers or cores())
    elif executor == "inprocess":
        stream = _in_process(todo)
    else:
        raise ConfigError(f"--executor: unknown executor {executor!r}")
    try:
        for planned, outcome in stream:
            if outcome.result is not None:
                key = store.add_result(outcome.result, sweep=name)
                if key == planned.key:
                    summary.done += 1
                else:  # the worker's giantstep is another version: its result has another key
                    outcome = Outcome(
                        error=f"the worker ran giantstep {outcome.result.get('version')}, "
                        f"this sweep is {library_version()}: install the same version everywhere"
                    )
                    store.add_failure(planned.config, outcome.error, sweep=name)
                    summary.failed += 1
            else:
                store.add_failure(
                    planned.config, outcome.error or "", diverged=outcome.diverged, sweep=name
                )
                summary.failed += 1
            if callback:
                callback(summary, planned, outcome)
    finally:
        if own_client is not None:
            own_client.close()
    summary.seconds = time.perf_counter() - started
    return summary
