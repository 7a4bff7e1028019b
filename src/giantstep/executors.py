"""Where work runs: a local process pool for sweeps, or a Dask cluster for runs and sweeps.

An executor is always an explicit argument, never a global:

- ``giantstep.run(config, executor=client)`` spreads every streamed sum of one run over a Dask
  cluster (``client`` a ``distributed.Client``; see :mod:`giantstep.reduction`);
- ``giantstep.sweep.run_sweep(runs, store, executor=...)`` runs whole runs on a
  ``concurrent.futures.Executor`` (such as :func:`local_processes`) or a Dask client; None runs
  them here, one after the other.

Dask itself is imported only when a cluster is used.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from giantstep.config import ConfigError

#: Thread-count variables of the BLAS libraries numpy may use.
BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMBA_NUM_THREADS",  # the compiled elementwise passes (giantstep.kernels)
)


def cores() -> int:
    """The cores this process may use (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def connect(address: str, timeout: float = 10.0):
    """A ``distributed.Client`` for the Dask scheduler at ``address``.

    Raises
    ------
    ConfigError
        Naming the address if the scheduler cannot be reached in ``timeout`` seconds.
    """
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask is a dependency
        raise ConfigError("scheduler: dask.distributed is not installed") from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(
            f"scheduler: cannot reach the Dask scheduler at {address} ({err})"
        ) from None


def _watch_parent(parent: int) -> None:
    """In a pool worker: exit when the parent dies (kill -9 leaves no orphan running).

    Ctrl-C is the parent's to report. In a worker it stops the run in flight, whose
    KeyboardInterrupt goes back to the parent as the task's outcome (no traceback here; the
    parent raises it, stopping too); the worker then leaves with the pool. Between runs it
    is ignored: a KeyboardInterrupt there would print the worker's traceback. Ignoring it in
    runs as well, the parent waited for them (31 s with 16-second runs); leaving at once
    (``os._exit``) left the pool's semaphores to the resource tracker's warnings.
    """
    signal.signal(signal.SIGINT, _stop_the_run)

    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True).start()


#: In a worker: whether it is inside a task (a run), where Ctrl-C stops it, and whether
#: Ctrl-C came (the tasks already queued to it are then skipped, not run).
_in_a_run = _stopping = False


def _stop_the_run(signum, frame) -> None:
    global _stopping
    _stopping = True
    if _in_a_run:
        raise KeyboardInterrupt


def _task(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a worker, marked as a run for :func:`_stop_the_run`."""
    global _in_a_run
    if _stopping:
        raise KeyboardInterrupt
    _in_a_run = True
    try:
        return fn(*args, **kwargs)
    finally:
        _in_a_run = False


@contextmanager
def local_processes(
    workers: int | None = None, *, threads: int | None = None
) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` fresh processes (default: the cores) for the runs of a sweep.

    Each worker gets ``threads`` BLAS threads (default: its share of the cores), unless the
    user set the thread count: K workers each running as many BLAS threads as there are cores
    oversubscribe the machine, 2–3× slower here. The count is read when BLAS loads, hence
    spawned (not forked) workers, started with these variables in their environment; the
    caller's environment has them too while the pool is open (a caller that computes beside
    its workers takes its share). A worker whose parent is killed exits.
    """
    workers = workers or cores()
    if workers < 1:
        raise ValueError(f"workers: must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads: must be at least 1, got {threads}")
    share = str(threads or max(1, cores() // workers))
    added = [v for v in BLAS_THREAD_VARIABLES if v not in os.environ]
    os.environ.update({v: share for v in added})
    pool = RenewingPool(
        lambda: _QuietProcessPool(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        )
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for v in added:
            os.environ.pop(v, None)


@contextmanager
def ignoring_ctrl_c() -> Iterator[None]:
    """A block during which Ctrl-C (SIGINT) is ignored, so that a process started in it
    ignores it too (a new process inherits an ignored signal, and Python installs its own
    handler only over the default one). A Ctrl-C inside the block is lost. Outside the main
    thread, where the handler cannot be changed, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        # None: a handler installed outside Python, which cannot be put back from here.
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


class _QuietProcessPool(ProcessPoolExecutor):
    """A process pool whose processes start ignoring Ctrl-C, and whose tasks it stops.

    Ctrl-C reaches the whole process group, and workers still importing giantstep printed
    their KeyboardInterrupt tracebacks (tens of lines each) while the parent, which handles
    it, stopped the sweep; ``_watch_parent`` handles it only once a worker is imported. The
    pool starts a process inside ``submit`` when it needs one, so each submission ignores
    Ctrl-C (microseconds, a few milliseconds when it starts a process). Each task runs as
    :func:`_task`, where Ctrl-C stops it.
    """

    def submit(self, fn, /, *args, **kwargs):
        with ignoring_ctrl_c():
            return super().submit(_task, fn, *args, **kwargs)


class RenewingPool(Executor):
    """A process pool that outlives a lost worker (killed, out of memory).

    A ``ProcessPoolExecutor`` whose worker dies is broken for good: every task it holds fails
    with BrokenProcessPool, and so does every later ``submit`` — a sweep stopped there
    (``internal error``). Here ``renew()`` replaces it with a fresh pool built the same way,
    and ``submit`` on a broken one renews it first. ``giantstep.sweep`` gives each run a
    broken pool failed a second chance on the new one.
    """

    def __init__(self, make: Callable[[], ProcessPoolExecutor]):
        self._make = make
        self._pool = make()

    @property
    def _max_workers(self) -> int:
        return self._pool._max_workers

    @property
    def broken(self) -> bool:
        """Whether the current pool lost a worker (and so every task it held)."""
        return bool(self._pool._broken)

    def renew(self) -> None:
        """Replace the pool with a fresh one (its tasks are lost with the old one)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._make()

    def submit(self, fn, /, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the pool, renewed first if a worker was lost."""
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self.renew()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the current pool down (``ProcessPoolExecutor.shutdown``)."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


#: How ``open_executor`` can place work.
EXECUTOR_KINDS = ("processes", "inprocess", "dask")


@contextmanager
def open_executor(
    kind: str | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    timeout: float = 10.0,
):
    """The executor for ``kind`` (default: ``dask`` with a scheduler, else ``processes``).

    Yields None for ``inprocess``, a :func:`local_processes` pool for ``processes`` and a
    connected ``distributed.Client`` for ``dask``; closes it afterwards.

    Raises
    ------
    ConfigError
        Naming ``executor`` or ``scheduler`` for an unknown kind, a scheduler without the dask
        executor, a dask executor without a scheduler, or an unreachable scheduler.
    """
    kind = kind or ("dask" if scheduler else "processes")
    if kind not in EXECUTOR_KINDS:
        raise ConfigError(f"executor: unknown {kind!r}; one of {', '.join(EXECUTOR_KINDS)}")
    if scheduler is not None and kind != "dask":
        raise ConfigError(f"scheduler {scheduler}: only with the dask executor")
    if kind == "dask":
        if scheduler is None:
            raise ConfigError("scheduler: the dask executor needs a scheduler address")
        client = connect(scheduler, timeout)
        try:
            yield client
        finally:
            client.close()
    elif kind == "processes":
        with local_processes(workers) as pool:
            yield pool
    else:
        yield None
