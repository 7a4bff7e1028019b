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

- ``claims``: ``key`` -> the sweep process running it (``owner``, ``host``, ``pid``, the
  process's start time, the time of the claim or its last renewal); see :meth:`Store.claim`.

Failed runs. ``diverged`` (a ``DivergenceError``: deterministic, the same config diverges again)
is **skipped** by a rerun of the sweep; ``failed`` (any other error: a lost worker, memory, a
bug) is **retried** by a rerun. ``giantstep sweep --retry`` retries both.

**Careful with files.** A store is marked: ``PRAGMA application_id`` is ``APPLICATION_ID`` and
``PRAGMA user_version`` the layout ``SCHEMA_VERSION``. A file is opened as a store only if it is
one — checked through a read-only connection before anything is written, so any other file (a
0-byte file, another program's SQLite database, text) is refused **unmodified**; only a path that
does not exist becomes a new store (built under a temporary name and linked into place, so no
half-made store is ever seen). A store written before the marker existed (application_id 0,
user_version 0, exactly the tables ``runs`` and ``arrays`` with their columns) is read as it is
and upgraded to the current layout only when opened for writing. An unknown schema version is
refused; ``PRAGMA quick_check`` runs on every open, so a truncated or damaged store is reported as
corrupted at once instead of failing later mid-read. Readers (``Store(path, readonly=True)``,
:func:`load`) open with ``mode=ro`` — falling back to ``immutable=1`` where the folder is not
writable — so a read-only file or folder can be read.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import socket
import sqlite3
import stat
import tempfile
import threading
import time
import tomllib
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from importlib.metadata import version as _version
from pathlib import Path
from tokenize import TokenError
from typing import Any
from urllib.parse import quote

import numpy as np

from giantstep.config import ConfigError
from giantstep.files import atomic_path, kind_of, make_folders

OK, DIVERGED, FAILED = "ok", "diverged", "failed"
#: Statuses a rerun skips by default.
FINAL = (OK, DIVERGED)

#: ``PRAGMA application_id`` of a giantstep store ("GSTP" in ASCII).
APPLICATION_ID = 0x47535450
#: ``PRAGMA user_version``: the layout this code reads and writes. Version 0 is the layout of
#: stores written before the marker (application_id 0): read as is, upgraded when written.
SCHEMA_VERSION = 1
#: Seconds after which a claim that was not renewed is stale (see Store.claim).
CLAIM_TTL = 3600.0
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: (device, inode) of each file this process has open as a Store, and how many times. POSIX
#: locks belong to the process, and closing any descriptor of a file drops all of them: the
#: header of a store was read with open()/close() while this process held it open (a second
#: Store, a reader beside a sweep), and so SQLite's locks went; another process's connection,
#: closing, then found the WAL unused and deleted it, and the writer's later transactions went
#: into a deleted file — unseen by every reader, lost if the writer was killed. A file open
#: here was checked when it was opened, so its header is not read again.
_open_here: dict[tuple[int, int], int] = {}
_open_here_lock = threading.Lock()

_TABLES = (
    """CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    error TEXT,
    config TEXT NOT NULL,
    version TEXT NOT NULL,
    sweep TEXT,
    finished REAL NOT NULL,
    metrics TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS arrays (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    name TEXT NOT NULL,
    format TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (key, name)
)""",
    """CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    renewed REAL NOT NULL
)""",
)
#: The columns of the version-0 layout, by table: what tells a pre-marker store from another
#: program's database.
_V0_COLUMNS = {
    "runs": ["key", "status", "error", "config", "version", "sweep", "finished", "metrics"],
    "arrays": ["key", "name", "format", "data"],
}


def library_version() -> str:
    """The installed giantstep's version (part of every run's key)."""
    return _version("giantstep")


def canonical_config(config: Any) -> dict[str, Any]:
    """The full resolved config as plain JSON data (an ExperimentConfig or a dict of tables)."""
    from giantstep.config import ExperimentConfig, validate_config

    if not isinstance(config, ExperimentConfig):
        # A record, never run from here: a py: activation is accepted (validation imports
        # nothing), or results of runs the user allowed could not be stored.
        config = validate_config(config, allow_python=True)
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
    if fmt == "json":
        return json.loads(data)
    raise ValueError(f"unknown format {fmt!r}")


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
    """A results file, opened for writing (the default: created if the path does not exist)
    or ``readonly``. Raises StoreError — naming the file and saying why, before anything is
    written — for a file that is not a giantstep store, a corrupted one, one of an unknown
    schema version, or one that cannot be opened.

    Any number of processes may read a store while it is written (WAL). Several processes may
    write it (each run in one transaction); sweeps sharing a store use :meth:`claim` so that
    no run is run twice. ``owner`` names this writer in its claims (default: host, pid and a
    random tag).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, owner: str | None = None):
        self.path = Path(path)
        self.readonly = readonly
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        if readonly:
            if not self.path.exists():
                raise StoreError(f"{self.path}: no such results store")
            self._conn = _open_readonly(self.path)
            try:
                self.schema_version = _check_store(self._conn, self.path)
            except BaseException:
                self._conn.close()
                raise
            self._forget = _opened_here(self)
            return
        if self.path.exists() or self.path.is_symlink():
            # Checked read-only first: a file that is not a store is never written to.
            with closing(_open_readonly(self.path)) as probe:
                version = _check_store(probe, self.path)
        else:
            try:
                make_folders(self.path.parent)
                version = _create_store(self.path)
            except OSError as err:
                raise StoreError(
                    f"{self.path}: cannot create a results store there ({err.strerror or err})"
                ) from None
        self._conn = _open_for_writing(self.path)
        if version == 0:
            try:
                _upgrade(self._conn, self.path)
            except BaseException:
                self._conn.close()
                raise
        self.schema_version = SCHEMA_VERSION
        self._forget = _opened_here(self)

    def close(self) -> None:
        """Close the file."""
        self._conn.close()
        self._forget()

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
        self._writable()
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

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path}: the store was opened read-only")

    # -- claims: sweeps sharing a store run each run once ----------------------------------

    def claim(
        self,
        key: str,
        owner: str | None = None,
        *,
        skip: Iterable[str] = FINAL,
        ttl: float = CLAIM_TTL,
    ) -> bool:
        """Take the run ``key`` for ``owner`` (default: this Store's); True if it is now ours.

        False if the run is stored with a status in ``skip`` (done: ``FINAL`` by default, or
        ``(OK,)`` for a sweep with ``--retry``), or if another owner holds a live claim on it.
        A claim is stale — and taken over — when its owner is a process of this host that has
        exited (a pid that was reused does not count: the process start time is compared) or
        when it was neither made nor renewed for ``ttl`` seconds (an owner on another host,
        or hung). One transaction: of several processes claiming a key, exactly one wins.
        Long runs: :meth:`renew` the claims well within ``ttl``; after storing a run,
        :meth:`release` it.
        """
        self._writable()
        owner = owner or self.owner
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT status FROM runs WHERE key = ?", (key,)).fetchone()
            held = conn.execute(
                "SELECT owner, host, pid, started, renewed FROM claims WHERE key = ?", (key,)
            ).fetchone()
            now = time.time()
            if (row is not None and row[0] in tuple(skip)) or (
                held is not None and held[0] != owner and not _stale(*held[1:], ttl, now)
            ):
                conn.execute("ROLLBACK")
                return False
            host, pid, started = _this_process()
            conn.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                (key, owner, host, pid, started, now),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return True

    def release(self, key: str, owner: str | None = None) -> bool:
        """Give up ``owner``'s claim on ``key`` (after storing the run); True if it held one."""
        self._writable()
        cursor = self._conn.execute(
            "DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner or self.owner)
        )
        return cursor.rowcount > 0

    def release_all(self, owner: str | None = None) -> int:
        """Give up every claim of ``owner`` (a sweep that stops); returns how many."""
        self._writable()
        cursor = self._conn.execute("DELETE FROM claims WHERE owner = ?", (owner or self.owner,))
        return cursor.rowcount

    def renew(self, owner: str | None = None) -> int:
        """Mark every claim of ``owner`` as live now (call well within CLAIM_TTL)."""
        self._writable()
        cursor = self._conn.execute(
            "UPDATE claims SET renewed = ? WHERE owner = ?", (time.time(), owner or self.owner)
        )
        return cursor.rowcount

    def claims(self) -> dict[str, str]:
        """``{key: owner}`` of the claims in the store (stale ones included)."""
        if self.schema_version < 1:
            return {}
        return dict(self._conn.execute("SELECT key, owner FROM claims").fetchall())

    # -- reading ------------------------------------------------------------------------------

    def versions(self) -> dict[str, int]:
        """``{library version: number of runs}``: which giantstep wrote the runs."""
        return dict(
            self._conn.execute("SELECT version, COUNT(*) FROM runs GROUP BY version").fetchall()
        )

    def status(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """``{key: status}`` for the given keys that are in the store (all if None)."""
        rows = self._conn.execute("SELECT key, status FROM runs").fetchall()
        found = dict(rows)
        if keys is None:
            return found
        return {k: found[k] for k in keys if k in found}

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def runs(self, version: str | None = None) -> Iterator[StoredRun]:
        """The stored runs in the order they finished (only those of ``version`` if given)."""
        where, args = ("WHERE version = ? ", (version,)) if version is not None else ("", ())
        rows = self._read(
            "SELECT key, status, error, config, version, sweep, finished, metrics FROM runs "
            f"{where}ORDER BY finished, key",
            args,
        )
        for key, status, error, config, version, sweep, finished, metrics in rows:
            config = self._decoded(key, "config", "json", config)
            metrics = self._decoded(key, "metrics", "json", metrics)
            yield StoredRun(key, status, error, config, version, sweep, finished, metrics)

    def _decoded(self, key: str, what: str, fmt: str, data: Any) -> Any:
        """``_decode(fmt, data)`` of run ``key``'s ``what``; StoreError naming the file, the run
        and ``what`` if the row holds something giantstep does not write (edited by hand)."""
        try:
            return _decode(fmt, data)
        # JSON, npy (its header is a Python literal: a damaged one raised TokenError), encodings
        except (ValueError, TypeError, EOFError, OSError, SyntaxError, TokenError) as err:
            raise StoreError(
                f"{self.path}: run {key}: its {what} cannot be read ({err}): the row was "
                "changed outside giantstep"
            ) from None

    def arrays(self, key: str) -> dict[str, Any]:
        """The arrays of one run, ``{dotted name: np.ndarray or JSON value}``."""
        rows = self._conn.execute(
            "SELECT name, format, data FROM arrays WHERE key = ?", (key,)
        ).fetchall()
        return {name: self._decoded(key, name, fmt, data) for name, fmt, data in rows}

    def all_arrays(self, version: str | None = None) -> dict[str, dict[str, Any]]:
        """``{key: arrays}`` of every run (only those of ``version`` if given)."""
        query = "SELECT key, name, format, data FROM arrays"
        args: tuple = ()
        if version is not None:
            query += " WHERE key IN (SELECT key FROM runs WHERE version = ?)"
            args = (version,)
        out: dict[str, dict[str, Any]] = {}
        for key, name, fmt, data in self._read(query, args):
            out.setdefault(key, {})[name] = self._decoded(key, name, fmt, data)
        return out

    def _read(self, query: str, args: tuple) -> list[tuple]:
        """The rows of ``query``; StoreError naming the file if SQLite cannot read them (a
        damaged page, text that is not UTF-8: 'internal error' before). All at once: a
        generator left half-read was closed after the store, and raised there."""
        try:
            return self._conn.execute(query, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: the results store is corrupted ({err})") from None


class StoreError(ConfigError):
    """The file is not a results store, is corrupted, or cannot be opened."""


def _uri(path: Path, query: str) -> str:
    return f"file:{quote(str(path.resolve()), safe='/')}?{query}"


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection: ``immutable=1`` when no -wal file exists, else ``mode=ro``, or
    ``immutable=1`` where the folder is not writable.

    In WAL mode a reader needs the ``-shm`` index; where it does not exist and cannot be made
    (a read-only folder) SQLite refuses ``mode=ro``, and ``immutable=1`` reads the file as it
    is — right, unless changes are still in a ``-wal`` file it would not see: then StoreError.
    """
    _check_header(path)
    if not Path(f"{path}-wal").exists():
        # No connection has the store open (the last one to close removes the -wal file), so
        # every change is in the file itself: read it as it is, which leaves no -wal/-shm
        # files behind (mode=ro would create them and could not remove them). A writer that
        # opens it meanwhile writes into its own -wal until a checkpoint, 1000 pages later.
        try:
            return _connect_readonly(path, "mode=ro&immutable=1")
        except sqlite3.DatabaseError as err:
            raise _unreadable(path, err) from None
    try:
        return _connect_readonly(path, "mode=ro")
    except sqlite3.OperationalError as err:
        first = err
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from None
    if os.access(path.parent, os.W_OK):
        raise StoreError(f"{path}: cannot be opened for reading ({first})")
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(
            f"{path}: its folder is read-only and {wal.name} holds changes a read-only reader "
            "cannot see; open the store once where its folder is writable"
        )
    try:
        return _connect_readonly(path, "mode=ro&immutable=1")
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from None


def _connect_readonly(path: Path, query: str) -> sqlite3.Connection:
    """A connection by URI, opened for real (the first read attaches the WAL index)."""
    conn = sqlite3.connect(_uri(path, query), uri=True, timeout=30.0)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None if it cannot be seen."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _count_open(file: tuple[int, int] | None, change: int) -> None:
    """Count one more (or one fewer) Store of this process on ``file``."""
    if file is not None:
        with _open_here_lock:
            count = _open_here.get(file, 0) + change
            if count > 0:
                _open_here[file] = count
            else:
                _open_here.pop(file, None)


def _opened_here(store: Store) -> weakref.finalize:
    """Count ``store`` as open in this process until the returned finalizer runs: at its
    ``close()``, or when it is collected unclosed — once either way (a store closed twice, by
    ``close()`` and its ``with``, is uncounted once)."""
    file = _file_id(store.path)
    _count_open(file, +1)
    return weakref.finalize(store, _count_open, file, -1)


def _check_header(path: Path) -> bytes | None:
    """The 100-byte SQLite header of ``path`` (None: a file this process has open as a Store,
    checked then, not read again: :data:`_open_here`); StoreError if the file cannot be one."""
    try:
        info = os.stat(path)
    except OSError:
        info = None  # open() says why
    mode = None if info is None else info.st_mode
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        # Opening a FIFO waits for a writer: refused before (`results FIFO` hung for ever).
        raise StoreError(f"{path}: is {kind_of(mode)}, not a giantstep results store")
    if info is not None and (info.st_dev, info.st_ino) in _open_here:
        return None
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except IsADirectoryError:
        raise StoreError(f"{path}: is a folder, not a giantstep results store") from None
    except OSError as err:
        raise StoreError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not header:
        raise StoreError(
            f"{path}: an empty file, not a giantstep results store (a store is created only "
            "at a path that does not exist)"
        )
    if not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path}: not a SQLite database, so not a giantstep results store")
    if len(header) >= 72 and int.from_bytes(header[68:72], "big") not in (0, APPLICATION_ID):
        # Another program's mark: refused without even a read-only connection to it.
        application_id = int.from_bytes(header[68:72], "big")
        raise StoreError(
            f"{path}: another program's SQLite database (application_id {application_id}), "
            "not a giantstep results store"
        )
    return header


def _ours_by_header(path: Path) -> bool:
    """Whether the header (bytes 68..71: application_id) carries giantstep's mark (a file open
    here as a Store is: it was checked, and reading it would drop this process's locks)."""
    if _file_id(path) in _open_here:
        return True
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError:
        return False
    return len(header) >= 72 and int.from_bytes(header[68:72], "big") == APPLICATION_ID


def _unreadable(path: Path, err: Exception) -> StoreError:
    if _ours_by_header(path):
        return StoreError(f"{path}: the results store is corrupted ({err})")
    return StoreError(f"{path}: not a giantstep results store, or corrupted ({err})")


def _check_store(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of the store behind ``conn``; StoreError naming what is wrong.

    Reads only: the marker, the tables and ``PRAGMA quick_check`` (every page is read once).
    """
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        schema = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            name: [c[1] for c in conn.execute(f"PRAGMA table_info('{name}')").fetchall()]
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
        }
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from None
    if application_id == APPLICATION_ID:
        if not 1 <= schema <= SCHEMA_VERSION:
            raise StoreError(
                f"{path}: a giantstep results store of schema version {schema}, which this "
                f"giantstep ({library_version()}, schema {SCHEMA_VERSION}) cannot read; use the "
                "giantstep that wrote it"
            )
        expected = {"runs", "arrays", "claims"}
    elif application_id == 0 and schema == 0 and tables and set(tables) == set(_V0_COLUMNS):
        if any(tables[name] != columns for name, columns in _V0_COLUMNS.items()):
            raise StoreError(f"{path}: not a giantstep results store (other columns)")
        expected = set(_V0_COLUMNS)
    elif application_id == 0 and not tables:
        raise StoreError(
            f"{path}: a SQLite database without a giantstep store's tables, not a results "
            "store (a store is created only at a path that does not exist)"
        )
    else:
        raise StoreError(
            f"{path}: another program's SQLite database (application_id {application_id}, "
            f"tables {', '.join(sorted(tables)) or 'none'}), not a giantstep results store"
        )
    if missing := expected - set(tables):
        raise StoreError(f"{path}: the results store is corrupted (no table {min(missing)})")
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: the results store is corrupted ({err})") from None
    if problems != ["ok"]:
        # A problem row may hold several lines (a tree's report): one line for the message.
        found = "; ".join(" ".join(str(p).split()) for p in problems[:3])
        raise StoreError(f"{path}: the results store is corrupted ({found})")
    return schema if application_id == APPLICATION_ID else 0


def _schema_statements() -> list[str]:
    return [
        *_TABLES,
        f"PRAGMA application_id = {APPLICATION_ID}",
        f"PRAGMA user_version = {SCHEMA_VERSION}",
    ]


def _create_store(path: Path) -> int:
    """Make a new, empty store at ``path`` (which did not exist); returns its schema version.

    Built under a temporary name in the same folder and hard-linked into place: a reader or a
    second creator sees no store or a whole one, never a half-made file. If another process
    created the store meanwhile, that one is kept (and checked).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".new")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # what sqlite3 would have given a file it created
        with closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _schema_statements():
                conn.execute(statement)
            conn.execute("COMMIT")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            if os.path.lexists(leftover):
                os.unlink(leftover)
    with closing(_open_readonly(path)) as probe:
        return _check_store(probe, path)


def _open_for_writing(path: Path) -> sqlite3.Connection:
    """A connection that can write the (checked) store, or StoreError now — not at the first
    run stored, hours into a sweep. SQLite opens a file it may not write read-only, silently:
    a write rolled back at once tells."""
    conn = None
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as err:
        if conn is not None:
            conn.close()
        raise StoreError(
            f"{path}: cannot be opened for writing ({err}); a read-only store can still be "
            "listed, exported and plotted"
        ) from None
    return conn


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Version 0 (written before the marker) -> SCHEMA_VERSION, in one transaction."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            marked = conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            if not marked:  # else another writer upgraded it meanwhile
                for statement in _schema_statements():
                    conn.execute(statement)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: cannot upgrade the store for writing ({err})") from None


def _umask() -> int:
    """The process umask, read without changing it (Linux); 0o022 where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _this_process() -> tuple[str, int, float]:
    """(host, pid, start time) of this process: what makes a claim's owner identifiable."""
    import psutil

    return socket.gethostname(), os.getpid(), psutil.Process().create_time()


def _stale(host: str, pid: int, started: float, renewed: float, ttl: float, now: float) -> bool:
    """Whether a claim made by (host, pid, started), renewed at ``renewed``, may be taken."""
    if now - renewed > ttl:
        return True
    if host != socket.gethostname():
        return False  # cannot see the process: only the age tells
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) > 0.5  # the pid was reused
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. access denied: it exists
        return False


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


#: The columns of a run's own fields, first in :func:`load`'s frame.
_RUN_COLUMNS = ("key", "status", "error", "version", "sweep", "finished")


def load(path: str | Path, arrays: bool = True, all_versions: bool = False):
    """The store as a pandas DataFrame, one row per run — of this library version only,
    unless ``all_versions`` (runs of two versions are not the same experiment: their keys
    differ, and mixing them would average two codes; see :meth:`Store.versions`).

    Parameters
    ----------
    path : str or Path
        A results store (``giantstep sweep --store``).
    arrays : bool
        Also load the arrays of every run (spectra, overlaps), one object column each.
    all_versions : bool
        Also the runs of other giantstep versions (by default only this version's).

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
        If the file does not exist, is not a results store or is corrupted. The store is
        opened read-only: a read-only file or folder works.

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
    version = None if all_versions else library_version()
    with closing(Store(path, readonly=True)) as store:
        rows = []
        blobs = store.all_arrays(version) if arrays else {}
        for run in store.runs(version):
            for what, table in (("config", run.config), ("metrics", run.metrics)):
                if not isinstance(table, dict):  # a row edited by hand
                    raise StoreError(
                        f"{path}: run {run.key}: its {what} is not a table but "
                        f"{type(table).__name__} (the row was changed outside giantstep)"
                    )
            row: dict[str, Any] = {name: getattr(run, name) for name in _RUN_COLUMNS}
            for name, value in flatten_config(run.config).items():
                row[name] = tuple(value) if isinstance(value, list) else value
            for name, value in run.metrics.items():
                row.setdefault(name, _restore_float(value))
            for name, value in blobs.get(run.key, {}).items():
                row.setdefault(name, value)
            rows.append(row)
    if rows:
        return pd.DataFrame(rows)
    # No runs: still the columns every run has (an export of it gets a header, a filter on a
    # config key selects nothing instead of naming no column).
    return pd.DataFrame(columns=[*_RUN_COLUMNS, *config_columns()])


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
        matches = frame[key].map(lambda v, w=wanted: _matches(v, w)).astype(bool)
        frame = frame.loc[matches]  # (an empty object-typed mask would select no columns)
    return frame


#: Metrics listed by ``giantstep results`` when no columns are asked for (the last step's).
_HEADLINE = ("update_cosine", "test_error", "predicted_update_cosine")


def config_columns() -> list[str]:
    """Every config key, as the dotted column :func:`load` gives it, in the config's order."""
    from giantstep.config import ExperimentConfig

    return list(flatten_config(ExperimentConfig().model_dump()))


def varying_config_columns(frame) -> list[str]:
    """The config columns whose value differs between the runs of ``frame``."""
    config_keys = [c for c in config_columns() if c in frame]
    return [c for c in config_keys if frame[c].astype(str).nunique() > 1]


def summary_columns(frame) -> list[str]:
    """Columns worth listing: the key, status, the config keys that vary, headline metrics."""
    varying = varying_config_columns(frame)
    metrics = []
    for leaf in _HEADLINE:
        named = [c for c in frame.columns if c == leaf or c.endswith("." + leaf)]
        if named:
            metrics.append(named[-1] if leaf != "test_error" else named[0])
    cols = ["key", "status", "version", *varying, *metrics]
    if "error" in frame and frame["error"].notna().any():
        cols.append("error")
    return [c for c in dict.fromkeys(cols) if c in frame]


def _one_arrow_type(column) -> bool:
    """Whether parquet can hold ``column``'s values as they are (one Arrow type)."""
    import pyarrow as pa

    try:
        pa.array(column.tolist(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def export(frame, path: str | Path, fmt: str) -> Path:
    """Write runs to csv (arrays as JSON lists) or parquet (arrays as lists), atomically.

    Parquet columns have one type: a column whose rows hold values of different kinds (text in
    some, numbers or lists in others) is written as text there, lists and dicts as JSON, as in
    csv. The file is written under a temporary name in the same folder, flushed to disk and
    renamed over ``path``: an export interrupted (a full disk, a kill) leaves the previous file
    whole and no temporary file behind.
    """
    path = Path(path)
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"fmt: unknown format {fmt!r} (csv or parquet)")
    make_folders(path.parent)

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, tuple):
            return list(value)
        return value

    def text(value: Any) -> Any:
        if isinstance(value, list | dict):
            return json.dumps(value)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return value if missing or isinstance(value, str) else str(value)

    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(plain)
            if fmt == "csv":
                frame[column] = frame[column].map(
                    lambda v: json.dumps(v) if isinstance(v, list | dict) else v
                )
            elif not _one_arrow_type(frame[column]):
                frame[column] = frame[column].map(text)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path
