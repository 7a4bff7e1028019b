"""The results store: one SQLite file, one row per run, keyed by what the run was.

A run's key is the sha256 of the canonical JSON of ``{"config": <full resolved config>,
"version": <library version>}``: the same experiment with the same code has the same key, so a
sweep can tell which of its runs are already done.

Layout (SQLite, WAL journal, ``synchronous=FULL``):

- ``runs``: ``key`` (primary key), ``status`` (``ok``, ``diverged`` or ``failed``), ``error``,
  ``config`` (canonical JSON), ``version``, ``sweep`` (name of the sweep that ran it, if any),
  ``finished`` (unix time), ``metrics`` (JSON object of the result's scalars, dotted names:
  ``step_size``, ``errors.0.test_error``, ``alignment.1.update_cosine``, ...).
- ``arrays``: ``(key, name)`` -> ``data``: every list of numbers in the result (spectra,
  per-direction alignments, overlaps) as the bytes of ``np.save``; values that are not a
  rectangular numeric array (ragged lists, lists with None) as JSON (``format = 'json'``).

The result is flattened generically, so a new field of ``RunResult`` needs no change here.
A run is written in one transaction: it is wholly in the store or absent.

Failed runs. ``diverged`` (a ``DivergenceError``: deterministic, the same config diverges again)
is **skipped** by a rerun of the sweep; ``failed`` (any other error: a lost worker, memory, a
bug) is **retried** by a rerun. ``giantstep sweep --retry`` retries both.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sqlite3
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

import numpy as np

from giantstep.config import ConfigError

OK, DIVERGED, FAILED = "ok", "diverged", "failed"
#: Statuses a rerun skips by default.
FINAL = (OK, DIVERGED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    error TEXT,
    config TEXT NOT NULL,
    version TEXT NOT NULL,
    sweep TEXT,
    finished REAL NOT NULL,
    metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arrays (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    name TEXT NOT NULL,
    format TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (key, name)
);
"""


def library_version() -> str:
    """The installed giantstep's version (part of every run's key)."""
    return _version("giantstep")


def canonical_config(config: Any) -> dict[str, Any]:
    """The full resolved config as plain JSON data (an ExperimentConfig or a dict of tables)."""
    from giantstep.config import ExperimentConfig, validate_config

    if not isinstance(config, ExperimentConfig):
        config = validate_config(config)
    return config.model_dump(mode="json")


def run_key(config: Any, version: str | None = None) -> str:
    """sha256 (hex) of the canonical JSON of the resolved config and the library version."""
    payload = {"config": canonical_config(config), "version": version or library_version()}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _numeric_array(value: list) -> np.ndarray | None:
    """``value`` as a rectangular int/float/bool array, or None if it is not one."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return None
    if array.dtype.kind not in "biuf":
        return None
    return array


def flatten_result(result: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a result (``RunResult.model_dump()`` without ``config``) into scalars and arrays.

    Dicts and lists of dicts are walked with dotted names (list items by index); scalars
    (numbers, strings, booleans, None) become metrics; lists of numbers become arrays
    (``np.ndarray``); other lists are kept as they are and stored as JSON.
    """
    metrics: dict[str, Any] = {}
    arrays: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif (
            isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value)
        ):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif isinstance(value, list | tuple | np.ndarray):
            array = _numeric_array(value)
            arrays[prefix] = array if array is not None else list(value)
        elif isinstance(value, np.generic):
            metrics[prefix] = value.item()
        else:
            metrics[prefix] = value

    walk("", dict(result))
    return metrics, arrays


def _encode(value: Any) -> tuple[str, bytes]:
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return "npy", buffer.getvalue()
    return "json", json.dumps(value).encode()


def _decode(fmt: str, data: bytes) -> Any:
    if fmt == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    return json.loads(data)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__}")


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    # JSON has no inf/nan; SQLite's json functions reject them. Keep them as strings.
    out = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not np.isfinite(v):
            v = repr(v)
        out[k] = v
    return out


@dataclass(frozen=True)
class StoredRun:
    """One row of the store, decoded."""

    key: str
    status: str
    error: str | None
    config: dict[str, Any]
    version: str
    sweep: str | None
    finished: float
    metrics: dict[str, Any]


class Store:
    """A results file. Only one process should write to it at a time (the sweep's parent);
    any number may read it while it is written (WAL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a giantstep results store ({err})") from None

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    def _write(
        self,
        key: str,
        status: str,
        config: dict[str, Any],
        version: str,
        metrics: dict[str, Any],
        arrays: dict[str, Any],
        error: str | None,
        sweep: str | None,
    ) -> None:
        encoded = [(name, *_encode(value)) for name, value in arrays.items()]
        metrics_json = json.dumps(_finite_or_none(metrics), default=_json_default)
        config_json = json.dumps(config, sort_keys=True, separators=(",", ":"))
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM arrays WHERE key = ?", (key,))
            conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, status, error, config_json, version, sweep, time.time(), metrics_json),
            )
            conn.executemany(
                "INSERT INTO arrays VALUES (?, ?, ?, ?)",
                [(key, name, fmt, data) for name, fmt, data in encoded],
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def add_result(self, result: Any, sweep: str | None = None) -> str:
        """Store a finished run (a ``RunResult`` or its ``model_dump()``); returns its key."""
        data = result.model_dump(mode="json") if hasattr(result, "model_dump") else dict(result)
        data = dict(data)
        config = canonical_config(data.pop("config"))
        version = str(data.get("version") or library_version())
        key = run_key(config, version)
        metrics, arrays = flatten_result(data)
        self._write(key, OK, config, version, metrics, arrays, None, sweep)
        return key

    def add_failure(
        self,
        config: Any,
        error: str,
        diverged: bool = False,
        sweep: str | None = None,
        version: str | None = None,
    ) -> str:
        """Record a run that failed (retried by a rerun) or diverged (skipped by a rerun)."""
        config = canonical_config(config)
        version = version or library_version()
        key = run_key(config, version)
        status = DIVERGED if diverged else FAILED
        self._write(key, status, config, version, {}, {}, error, sweep)
        return key

    # -- reading ------------------------------------------------------------------------------

    def status(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """``{key: status}`` for the given keys that are in the store (all if None)."""
        rows = self._conn.execute("SELECT key, status FROM runs").fetchall()
        found = dict(rows)
        if keys is None:
            return found
        return {k: found[k] for k in keys if k in found}

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def runs(self) -> Iterator[StoredRun]:
        """Every run, in the order they finished."""
        rows = self._conn.execute(
            "SELECT key, status, error, config, version, sweep, finished, metrics FROM runs "
            "ORDER BY finished, key"
        )
        for key, status, error, config, version, sweep, finished, metrics in rows:
            yield StoredRun(
                key,
                status,
                error,
                json.loads(config),
                version,
                sweep,
                finished,
                json.loads(metrics),
            )

    def arrays(self, key: str) -> dict[str, Any]:
        """The arrays of one run, ``{dotted name: np.ndarray or JSON value}``."""
        rows = self._conn.execute(
            "SELECT name, format, data FROM arrays WHERE key = ?", (key,)
        ).fetchall()
        return {name: _decode(fmt, data) for name, fmt, data in rows}

    def all_arrays(self) -> dict[str, dict[str, Any]]:
        """The arrays of every run: ``{key: {dotted name: value}}``."""
        out: dict[str, dict[str, Any]] = {}
        for key, name, fmt, data in self._conn.execute(
            "SELECT key, name, format, data FROM arrays"
        ):
            out.setdefault(key, {})[name] = _decode(fmt, data)
        return out


class StoreError(ConfigError):
    """The file is not a results store (or cannot be opened)."""


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"batch_size": 8}}`` -> ``{"train.batch_size": 8}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten_config(v, name))
        else:
            out[name] = v
    return out


def _restore_float(value: Any) -> Any:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def load(path: str | Path, arrays: bool = True):
    """The store as a pandas DataFrame, one row per run.

    Parameters
    ----------
    path : str or Path
        A results store (``giantstep sweep --store``).
    arrays : bool
        Also load the arrays of every run (spectra, overlaps), one object column each.

    Returns
    -------
    pandas.DataFrame
        Columns: ``key``, ``status``, ``error``, ``version``, ``sweep``, ``finished``; the
        config flattened into dotted columns (``seed``, ``train.batch_size``, ``readout.ridge``
        ...); the metrics (``step_size``, ``errors.0.test_error``,
        ``alignment.1.update_cosine`` ...); and, if ``arrays``, one object column per array
        (``np.ndarray`` values). A config column and a metric never share a name: config keys
        come first and metrics do not use them.

    Raises
    ------
    StoreError
        If the file does not exist or is not a results store.

    Examples
    --------
    >>> import tempfile, giantstep
    >>> from giantstep.store import Store
    >>> path = tempfile.mkdtemp() + "/runs.sqlite"
    >>> with Store(path) as store:
    ...     key = store.add_result(giantstep.run({"dim": 20, "width": 10,
    ...         "train": {"batch_size": 256}, "readout": {"samples": 256, "ridge": [0.1]},
    ...         "test": {"samples": 256}}))
    >>> frame = load(path)
    >>> frame[["status", "dim", "train.batch_size"]].values.tolist()
    [['ok', 20, 256]]
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such results store")
    with closing(Store(path)) as store:
        rows = []
        blobs = store.all_arrays() if arrays else {}
        for run in store.runs():
            row: dict[str, Any] = {
                "key": run.key,
                "status": run.status,
                "error": run.error,
                "version": run.version,
                "sweep": run.sweep,
                "finished": run.finished,
            }
            for name, value in flatten_config(run.config).items():
                row[name] = tuple(value) if isinstance(value, list) else value
            for name, value in run.metrics.items():
                row.setdefault(name, _restore_float(value))
            for name, value in blobs.get(run.key, {}).items():
                row.setdefault(name, value)
            rows.append(row)
    return pd.DataFrame(rows)


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, list):
        return isinstance(value, list | tuple | np.ndarray) and list(value) == wanted
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted or str(value).lower() == str(wanted).lower()
    if isinstance(wanted, int | float) and isinstance(value, int | float | np.number):
        return math.isclose(float(value), float(wanted), rel_tol=1e-12, abs_tol=0.0)
    return str(value) == str(wanted)


def select(frame, filters: Iterable[str]):
    """The rows of ``frame`` matching every ``key=value`` (value a TOML literal, else a string).

    Raises ConfigError naming a filter that is malformed or names no column.
    """
    for item in filters:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"filter {item!r}: expected key=value")
        if key not in frame.columns:
            raise ConfigError(f"filter {item!r}: no column {key!r} in the store")
        try:
            wanted = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            wanted = raw.strip()
        frame = frame[frame[key].map(lambda v, w=wanted: _matches(v, w))]
    return frame


#: Metrics listed by ``giantstep results`` when no columns are asked for (the last step's).
_HEADLINE = ("update_cosine", "test_error", "predicted_update_cosine")


def varying_config_columns(frame) -> list[str]:
    """The config columns whose value differs between the runs of ``frame``."""
    from giantstep.config import ExperimentConfig

    config_keys = [c for c in flatten_config(ExperimentConfig().model_dump()) if c in frame]
    return [c for c in config_keys if frame[c].astype(str).nunique() > 1]


def summary_columns(frame) -> list[str]:
    """Columns worth listing: the key, status, the config keys that vary, headline metrics."""
    varying = varying_config_columns(frame)
    metrics = []
    for leaf in _HEADLINE:
        named = [c for c in frame.columns if c == leaf or c.endswith("." + leaf)]
        if named:
            metrics.append(named[-1] if leaf != "test_error" else named[0])
    cols = ["key", "status", *varying, *metrics]
    if "error" in frame and frame["error"].notna().any():
        cols.append("error")
    return [c for c in dict.fromkeys(cols) if c in frame]


def export(frame, path: str | Path, fmt: str) -> Path:
    """Write runs to csv (arrays as JSON lists) or parquet (arrays as lists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, tuple):
            return list(value)
        return value

    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(plain)
            if fmt == "csv":
                frame[column] = frame[column].map(
                    lambda v: json.dumps(v) if isinstance(v, list | dict) else v
                )
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ConfigError(f"fmt: unknown format {fmt!r} (csv or parquet)")
    return path
