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
import math
import os
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor
from concurrent.futures import wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
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
from giantstep.experiment import check_memory
from giantstep.reduction import is_cluster
from giantstep.store import CLAIM_TTL, FINAL, OK, Store, StoreError, library_version, run_key
from giantstep.targets import NonFiniteLabelsError
from giantstep.train import DivergenceError

_SWEEP_KEYS = {"name", "base", "base_file", "grid", "zip"}
#: Runs of one sweep, counted from the grid before anything is expanded (validating each run
#: costs about a tenth of a millisecond: the limit keeps it to seconds).
MAX_RUNS = 20_000


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its grid values, its validated config and its store key."""

    index: int
    values: dict[str, Any]
    config: ExperimentConfig
    key: str

    def label(self) -> str:
        """The run's grid values, ``key=value, ...`` (``base`` if none)."""
        return ", ".join(f"{k}={v!r}" for k, v in self.values.items()) or "base"


@dataclass
class Sweep:
    """A parsed sweep file: ``axes`` is a list of (keys, value tuples), product taken in order."""

    name: str | None
    base: dict[str, Any]
    axes: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = field(default_factory=list)

    def expand(self, *, allow_python: bool = False) -> list[PlannedRun]:
        """All runs, every config validated (ConfigError naming the run and the key).

        ``allow_python``: accept ``py:module:function`` activations (they run that module's
        code; see ``config.validate_config``).
        """
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
                set_dotted(data, key, copy.deepcopy(value))  # a table value stays the grid's
            try:
                config = validate_config(data, allow_python=allow_python)
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
        if not isinstance(data["base_file"], str):
            raise ConfigError(f"base_file: expected a file name (got {data['base_file']!r})")
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
    count = math.prod(len(values) for _, values in axes)
    if count > MAX_RUNS:
        raise ConfigError(
            f"grid: {count:,} runs, more than {MAX_RUNS:,} (each is validated before the first "
            "starts; split the sweep into several files)"
        )
    return Sweep(name=name, base=base, axes=axes)


def _flatten_base(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[base]``'s values by dotted key. A quoted key holding a dot (``"a.b" = 1``, the
    grid's spelling) is refused as in a config file: TOML keeps it apart from ``a.b = 2``, so
    one of the two would be dropped without a word."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        name = f"{prefix}.{k}" if prefix else k
        if "." in k or not k:
            raise ConfigError(
                f'base: "{k}": a quoted key (write a dotted key unquoted in [base], '
                f"{name} = ...; only [grid] and [[zip]] quote their keys)"
            )
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
    The parent validated the config, opt-in to ``py:`` activations included.
    A diverging run and non-finite labels are deterministic (``diverged``: a rerun skips them).
    """
    from giantstep.experiment import run

    try:
        result = run(validate_config(config, allow_python=True))
    except (DivergenceError, NonFiniteLabelsError) as err:
        return Outcome(error=str(err), diverged=True)
    except Exception as err:  # noqa: BLE001 - any failure is recorded, the sweep goes on
        tail = traceback.format_exc(limit=3)
        return Outcome(error=f"{type(err).__name__}: {err}\n{tail}")
    return Outcome(result=result.model_dump(mode="json"))


@dataclass
class SweepSummary:
    """Counts of a sweep: runs in all, done now, skipped (already stored), failed; wall time."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    #: Runs another live sweep on the same store was running when this one ended: not stored
    #: by it, not stored yet (rerun to finish them, or ``wait_for_others``).
    held: int = 0


#: Called by the parent once before the first run (run and outcome None) and after each stored
#: run: (summary so far, the run, its outcome).
Callback = Callable[[SweepSummary, PlannedRun | None, Outcome | None], object]


#: Seconds between looks at the runs another live sweep holds, when waiting for them.
HELD_POLL = 1.0
#: Seconds between renewals of a sweep's claims (well within ``store.CLAIM_TTL``).
RENEW_INTERVAL = CLAIM_TTL / 4


#: Held while the claim renewer is inside SQLite. A process forked meanwhile (a sweep given a
#: fork-based ProcessPoolExecutor starts its workers as it goes) would inherit its locks held,
#: and hang at the first use: forks wait for it.
_no_fork_meanwhile = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_no_fork_meanwhile.acquire,
        after_in_parent=_no_fork_meanwhile.release,
        after_in_child=_no_fork_meanwhile.release,
    )


@contextmanager
def claims_kept_live(store: Store, interval: float | None = None) -> Iterator[None]:
    """Renew ``store.owner``'s claims every ``interval`` seconds (default ``RENEW_INTERVAL``)
    from a thread of its own, on a connection of its own, for as long as the context lasts.

    Renewing between outcomes left a run longer than ``CLAIM_TTL`` (an hour) looking abandoned:
    a second sweep on the store took it over and ran it again. The connection is opened at the
    first renewal (a sweep shorter than ``interval`` never opens it); a store that is busy at
    one renewal is tried again at the next.
    """
    stop = threading.Event()

    def renew() -> None:
        own = None
        try:
            while not stop.wait(RENEW_INTERVAL if interval is None else interval):
                with _no_fork_meanwhile:
                    try:
                        own = own or Store(store.path, owner=store.owner)
                        own.renew()
                    except sqlite3.OperationalError:  # locked for longer than its timeout
                        pass
                    except StoreError:  # the file went away: nothing to keep live
                        return
        finally:
            if own is not None:
                with _no_fork_meanwhile:
                    own.close()

    thread = threading.Thread(target=renew, name="giantstep-claims", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _parallelism(executor: Any) -> int:
    """How many runs ``executor`` works on at once."""
    if is_cluster(executor):
        return max(1, sum(executor.nthreads().values()))
    return max(1, getattr(executor, "_max_workers", 1))


def _outcomes(executor: Any, runs: Iterable[PlannedRun]) -> Iterator[tuple[PlannedRun, Outcome]]:
    """Each run with its outcome, as they finish: here (None), or on the executor.

    ``runs`` is read lazily, just before each run is started. A few runs are queued per
    worker: enough to keep them busy, few to redo after a crash.
    On a Dask cluster the run's key is the task key, so a worker lost mid-run has its runs
    rerun elsewhere by Dask.
    """
    if executor is None:
        for planned in runs:
            yield planned, execute(planned.config.model_dump(mode="json"))
        return
    if is_cluster(executor):
        from distributed import wait

        def wait_for(futures: list, return_when: str):
            # distributed.wait runs on the *default* client's event loop: make it this one,
            # or, with a second client in the process, the wait fails ("different event loop").
            with executor.as_current():
                return wait(futures, return_when=return_when)

        def submit(planned: PlannedRun):
            config = planned.config.model_dump(mode="json")
            return executor.submit(execute, config, key=f"giantstep-{planned.key}")
    else:
        wait_for = futures_wait

        def submit(planned: PlannedRun):
            return executor.submit(execute, planned.config.model_dump(mode="json"))

    pending = iter(runs)
    window = 2 * _parallelism(executor)
    running: dict[Any, PlannedRun] = {}
    second_chance: set[str] = set()
    while True:
        for planned in itertools.islice(pending, max(0, window - len(running))):
            running[submit(planned)] = planned
        if not running:
            return
        finished = wait_for(list(running), return_when=FIRST_COMPLETED).done
        for future in finished:
            planned = running.pop(future)
            try:
                outcome = future.result()
            except BrokenProcessPool:
                # A worker died (killed, out of memory) and took every task of its pool with
                # it: each gets a fresh pool and a second chance; one that loses it too is
                # recorded as failed (it may be what kills them).
                if planned.key in second_chance or not hasattr(executor, "renew"):
                    twice = ", twice" if planned.key in second_chance else ""
                    outcome = Outcome(error=f"the worker process died running it{twice} "
                                            "(killed, or out of memory?)")  # fmt: skip
                else:
                    second_chance.add(planned.key)
                    if executor.broken:
                        executor.renew()
                    running[submit(planned)] = planned
                    continue
            except Exception as err:  # noqa: BLE001 - KilledWorker...
                outcome = Outcome(error=f"the worker failed: {type(err).__name__}: {err}")
            if is_cluster(executor):
                future.release()
            yield planned, outcome


def run_sweep(
    sweep: Sweep | list[PlannedRun],
    store: Store,
    *,
    executor: Any = None,
    retry: bool = False,
    callback: Callback | None = None,
    name: str | None = None,
    wait_for_others: bool = False,
) -> SweepSummary:
    """Run the sweep's runs not yet in ``store``; store each as it finishes.

    Parameters
    ----------
    sweep : Sweep or list of PlannedRun
        The runs (every config validated before the first starts).
    store : Store
        Where each finished run is written, in one transaction, by this process only.
    executor : None, concurrent.futures.Executor or distributed.Client
        Where the runs execute: here, one after the other (None); on a local pool
        (``giantstep.executors.local_processes``); or on a Dask cluster.
    retry : bool
        Also rerun ``diverged`` runs (``failed`` ones are always rerun).
    callback : callable, optional
        See ``Callback``.
    name : str, optional
        Recorded with each run (default: the sweep's own).
    wait_for_others : bool
        Runs that another sweep on the same store has claimed are skipped, then looked at
        again once this sweep's own are done: those stored are done, those whose sweep has
        died are run here; those still running elsewhere are counted as ``held`` — or, with
        ``wait_for_others``, waited for (a study needs every run to analyse them).

    Returns
    -------
    SweepSummary

    Raises
    ------
    ConfigError
        Before any run, for a run that cannot fit in this machine's memory (not checked on a
        cluster, whose workers are elsewhere).
    ValueError
        For an executor that is none of the above.
    """
    if executor is not None and not (is_cluster(executor) or isinstance(executor, Executor)):
        raise ValueError(
            "executor: expected None, a concurrent.futures.Executor or a Dask client, got "
            f"{type(executor).__name__}"
        )
    started = time.perf_counter()
    runs = sweep.expand() if isinstance(sweep, Sweep) else list(sweep)
    if name is None and isinstance(sweep, Sweep):
        name = sweep.name
    if not is_cluster(executor):
        for planned in runs:  # before any run: a config that cannot fit here stops the sweep
            try:
                check_memory(planned.config)
            except ConfigError as err:
                raise ConfigError(f"run with {planned.label()}: {err}") from None
    status = store.status(p.key for p in runs)
    keep = (OK,) if retry else FINAL
    todo = [p for p in runs if status.get(p.key) not in keep]
    summary = SweepSummary(total=len(runs), skipped=len(runs) - len(todo))
    if callback:
        callback(summary, None, None)

    held: list[PlannedRun] = []

    def claimed(queue: list[PlannedRun]) -> Iterator[PlannedRun]:
        # Each run is claimed just before it starts: a second sweep on the same store (here or
        # on another machine) skips what this one runs or has stored, so no run runs twice.
        for planned in queue:
            if store.claim(planned.key, skip=keep):
                yield planned
            else:
                held.append(planned)

    def run_all(queue: list[PlannedRun]) -> None:
        for planned, outcome in _outcomes(executor, claimed(queue)):
            _store_outcome(store, planned, outcome, summary, name)
            store.release(planned.key)
            if callback:
                callback(summary, planned, outcome)

    try:
        with claims_kept_live(store):
            queue, passes = todo, 0
            while queue:
                run_all(queue)
                passes += 1
                # Claimed elsewhere: stored since, or still to come. A sweep that died holds its
                # runs until the next pass claims them (they were reported as 'already in').
                status = store.status(p.key for p in held)
                summary.skipped += sum(status.get(p.key) in keep for p in held)
                queue = [p for p in held if status.get(p.key) not in keep]
                held.clear()
                if queue and passes >= 2 and not wait_for_others:
                    summary.held = len(queue)
                    break
                if queue and passes >= 2:
                    time.sleep(HELD_POLL)
    finally:
        store.release_all()
    summary.seconds = time.perf_counter() - started
    return summary


def _store_outcome(
    store: Store, planned: PlannedRun, outcome: Outcome, summary: SweepSummary, name: str | None
) -> None:
    """Write one run's outcome (one transaction) and count it."""
    if outcome.result is not None:
        key = store.add_result(outcome.result, sweep=name)
        if key == planned.key:
            summary.done += 1
        else:  # the worker's giantstep is another version: its result has another key
            error = (
                f"the worker ran giantstep {outcome.result.get('version')}, "
                f"this sweep is {library_version()}: install the same version everywhere"
            )
            outcome.result, outcome.error = None, error
            store.add_failure(planned.config, error, sweep=name)
            summary.failed += 1
    else:
        store.add_failure(
            planned.config, outcome.error or "", diverged=outcome.diverged, sweep=name
        )
        summary.failed += 1
