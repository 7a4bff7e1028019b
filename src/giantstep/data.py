"""Randomness keys and streamed inputs: the rows of stream ``s`` for seed ``k`` are always the
same rows.

Rows are drawn in fixed chunks of ``CHUNK_ROWS``; chunk ``c`` of stream ``s`` comes from its own
counter-based generator (Philox keyed by ``SeedSequence(seed, spawn_key=(DATA, *s, c))``). A block
in memory is a whole number of chunks, so the block size, the thread count and the number of
workers change the speed, never the rows. The chunks of a block are independent, so they are
filled in parallel: by background threads while the caller computes on the previous block (or,
for a set's first block, while it works on one core before it: ``draw_ahead``), and by the
caller itself when it needs a block that is not finished (the compiled draws release the GIL).

This module is a leaf of the package: it imports nothing of giantstep.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from typing import Literal, get_args

import numpy as np

from giantstep import normals
from giantstep.scratch import scratch

#: Rows drawn from one counter-based generator; the unit that makes results independent of
#: how the work is cut. A block size must be a multiple of it.
CHUNK_ROWS = 256

#: Input distributions (the config's ``data.distribution``).
Distribution = Literal["gaussian", "rademacher", "sphere"]
#: Floating types of the block arithmetic (the config's ``compute.dtype``).
Dtype = Literal["float64", "float32"]

# First entry of every spawn key: what the randomness is for. Fixed forever, so that a seed
# means the same experiment in every version.
TEACHER, FIRST_LAYER, SECOND_LAYER, DATA = 0, 1, 2, 3
#: The random part of the spike direction the error theory predicts (giantstep.theory.errors).
SPIKE_DIRECTION = 100
#: Which labels are corrupted and the inputs of their replacements (``giantstep.corruption``).
CORRUPTION = 4

# Second entry of a data key: which set of samples.
TRAIN, RIDGE, TEST = 0, 1, 2


#: Background threads that draw the next block while the caller computes on this one, for a
#: stream read outside a run (a library caller, a cluster worker's piece; a run draws each
#: block at need, :func:`prefetching`). One leaves BLAS most of the cores; the caller joins in
#: whenever it waits for a block.
PREFETCH_THREADS = 1
#: This thread's prefetch setting (:func:`prefetching`): per thread, so that runs in several
#: threads of one process do not see each other's.
_settings = threading.local()


def draw_threads() -> int:
    """Threads that may fill one block: the cores this process may use, capped by
    ``OMP_NUM_THREADS`` when set (a sweep's worker gets its share of the machine)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        count = min(count or 1, int(limit))
    return max(1, count or 1)


_pool: ThreadPoolExecutor | None = None
_pool_owner = -1
_pool_lock = threading.Lock()


def helper_pool() -> ThreadPoolExecutor:
    """The process's one pool of helper threads (``draw_threads()`` of them), started once,
    not per stream or block: they draw the chunks of blocks and sum the parts of a small
    network's blocks (``giantstep.reduction``)."""
    global _pool, _pool_owner
    with _pool_lock:
        if _pool is None or _pool_owner != os.getpid():  # a forked child has no threads
            _pool = ThreadPoolExecutor(draw_threads(), thread_name_prefix="giantstep-draw")
            _pool_owner = os.getpid()
        return _pool


class _BlockFill:
    """The chunks of one block being drawn; any thread may claim the next one."""

    def __init__(self, stream: SampleStream, first_chunk: int, x: np.ndarray, noise: np.ndarray):
        self.stream, self.first_chunk, self.x, self.noise = stream, first_chunk, x, noise
        self.count = len(noise) // CHUNK_ROWS
        self.claimed = self.filled = self.helpers = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()
        if self.count == 0:  # nothing to draw: waiting for it must not wait forever
            self.done.set()

    def work(self) -> None:
        """Fill chunks until none is left unclaimed."""
        while True:
            with self.lock:
                c = self.claimed
                if c >= self.count:
                    return
                self.claimed += 1
            part = slice(c * CHUNK_ROWS, (c + 1) * CHUNK_ROWS)
            try:
                self.stream._fill_chunk(self.first_chunk + c, self.x[part], self.noise[part])
            except BaseException as err:  # re-raised in the caller by wait()
                self.error = err
            with self.lock:
                self.filled += 1
                if self.filled == self.count:
                    self.done.set()

    def start(self, threads: int) -> _BlockFill:
        """Have ``threads`` background threads on the block (0: the caller draws it all),
        counting those handed it before."""
        pool = helper_pool()
        for _ in range(min(threads, self.count) - self.helpers):
            self.helpers += 1
            pool.submit(self.work)
        return self

    def cancel(self) -> None:
        """Leave the chunks not yet claimed undrawn (a block drawn ahead and not taken)."""
        with self.lock:
            self.claimed = self.count

    def wait(self) -> None:
        """Help fill what is left, then wait for the chunks others are drawing."""
        self.work()
        self.done.wait()
        if self.error is not None:
            raise self.error


@contextmanager
def prefetching(threads: int) -> Iterator[None]:
    """Within this context the next block of a stream is drawn by ``threads`` background
    threads while the caller computes on this one; with 0, every core draws each block when
    it is needed instead.

    0 is for a caller whose products use every core (a large network on BLAS's threads, a
    small one summing its blocks in parts, ``giantstep.reduction``): a drawing thread beside
    them takes its time from theirs, so that on an idle 2-core machine the overlap bought
    nothing and drawing at need on both cores was 6 % faster (``d = N = 1000``,
    ``n = 3·10^5``). The rows are the same either way.
    """
    previous = getattr(_settings, "prefetch", PREFETCH_THREADS)
    _settings.prefetch = threads
    try:
        yield
    finally:
        _settings.prefetch = previous
        _drop_ahead()


def draw_ahead(stream: SampleStream, n_samples: int, block_size: int) -> None:
    """Begin drawing the first block of ``stream.blocks(n_samples, block_size)`` on one helper
    thread, for a caller that draws at need (``prefetching(0)``) and is about to work on one
    core before it reads the stream (a run building its network, measuring a step): the core
    its one-thread work leaves idle draws. That call of ``blocks``, in this thread, takes the
    block and draws what is left on every core; any other drops it. The rows are the same
    either way. Does nothing outside ``prefetching(0)`` or without a core to spare.
    """
    _drop_ahead()
    if getattr(_settings, "prefetch", PREFETCH_THREADS) != 0 or draw_threads() < 2:
        return
    if n_samples > 0:
        key = (stream, 0, min(block_size, n_samples))
        _settings.ahead = key, stream._begin(0, key[2], None, threads=1)


def _take_ahead(stream: SampleStream, start: int, rows: int):
    """The block drawn ahead for rows ``start .. start + rows`` of ``stream``, if it is the
    one pending in this thread (dropping any other)."""
    ahead = getattr(_settings, "ahead", None)
    if ahead is not None and ahead[0] == (stream, start, rows):
        _settings.ahead = None
        return ahead[1]
    _drop_ahead()
    return None


def _drop_ahead() -> None:
    """Forget this thread's block drawn ahead, if any, and stop its drawing."""
    ahead = getattr(_settings, "ahead", None)
    _settings.ahead = None
    if ahead is not None:
        ahead[1][2].cancel()


def generator(seed: int, *key: int) -> np.random.Generator:
    """The generator for ``(seed, key)``: independent of every other key, reproducible."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=key)))


def standard_normals(shape: tuple[int, ...], seed: int, *key: int) -> np.ndarray:
    """float64 array of ``shape``: ``generator(seed, *key).standard_normal(shape)`` to the last
    bit, drawn by ``giantstep.normals`` (2.5 times numpy's rate)."""
    out = np.empty(shape)
    normals.fill(*normals.philox_state(philox_key(seed, *key)), out)
    return out


def philox_key(seed: int, *key: int) -> np.ndarray:
    """(2,) uint64: the Philox key of ``(seed, key)``, as ``Philox(SeedSequence(seed,
    spawn_key=key))`` derives it (its counter starts at 0)."""
    return np.random.SeedSequence(seed, spawn_key=key).generate_state(2, np.uint64)


@dataclass(frozen=True)
class Block:
    """Rows ``start .. start + len(x)`` of a stream.

    x: (rows, dim) inputs. noise: (rows,) standard normal label noise, independent of ``x``.
    stream: the stream the rows come from (None for a block made by hand); it keys the
    per-sample draws of label corruption.
    """

    start: int
    x: np.ndarray
    noise: np.ndarray
    stream: SampleStream | None = None


@dataclass(frozen=True)
class SampleStream:
    """The inputs of one stream (e.g. gradient batch ``t``) of one seed.

    ``blocks(n, size)`` yields rows ``0..n`` in blocks of ``size`` rows, generating the next block
    in a background thread while the caller computes on the current one (numpy's generators
    release the GIL while filling arrays).
    """

    seed: int
    key: tuple[int, ...]
    dim: int
    _: KW_ONLY
    distribution: Distribution = "gaussian"
    dtype: np.dtype = np.dtype(np.float64)

    def __post_init__(self) -> None:
        if self.distribution not in get_args(Distribution):
            raise ValueError(
                f"distribution: unknown {self.distribution!r}; one of "
                + ", ".join(get_args(Distribution))
            )
        if np.dtype(self.dtype).name not in get_args(Dtype):
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(get_args(Dtype))}")
        object.__setattr__(self, "dtype", np.dtype(self.dtype))  # accept "float32" too

    def _fill_chunk(self, chunk: int, x: np.ndarray, noise: np.ndarray) -> None:
        """Write chunk ``chunk`` into ``x`` (CHUNK_ROWS, dim) and ``noise`` (CHUNK_ROWS,): the
        numbers of ``generator(seed, DATA, *key, chunk)`` — its normals drawn by
        ``giantstep.normals`` (numpy's bits, faster), its other draws by numpy — in float64,
        rounded once into float32 blocks: a seed is the same samples in either dtype (float32
        blocks drew numpy's float32 normals, another ziggurat: other samples)."""
        key = (self.seed, DATA, *self.key, chunk)
        if self.distribution == "rademacher":
            rng = generator(*key)
            x[...] = rng.integers(0, 2, size=x.shape, dtype=np.int8)
            x *= 2
            x -= 1
            noise[...] = rng.standard_normal(len(noise))
            return
        state = normals.philox_state(philox_key(*key))
        _draw(state, x, on_sphere=self.distribution == "sphere")
        _draw(state, noise)

    def rows(self, start: int, stop: int, buffers: Block | None = None) -> Block:
        """Rows ``start .. stop`` (``start`` a multiple of ``CHUNK_ROWS``).

        ``buffers``, if given, is a block whose arrays are overwritten instead of allocating.
        """
        check_start(start)
        if stop <= start:
            raise ValueError(f"stop={stop} must be above start={start}")
        n_chunks = math.ceil((stop - start) / CHUNK_ROWS)
        padded = n_chunks * CHUNK_ROWS
        if buffers is None or len(buffers.noise) < padded:
            x = np.empty((padded, self.dim), dtype=self.dtype)
            noise = np.empty(padded, dtype=self.dtype)
        else:
            x, noise = buffers.x, buffers.noise
        fill = _BlockFill(self, start // CHUNK_ROWS, x[:padded], noise[:padded])
        fill.start(draw_threads() - 1).wait()
        rows = stop - start
        return Block(start=start, x=x[:rows], noise=noise[:rows], stream=self)

    def _begin(
        self, first: int, rows: int, buffers: tuple[np.ndarray, np.ndarray] | None, threads=0
    ) -> tuple[Block, tuple[np.ndarray, np.ndarray], _BlockFill]:
        """Rows ``first .. first + rows`` begun on ``threads`` helper threads, into
        ``buffers`` (x, noise) if given (else new ones): (block, buffers, its fill)."""
        padded = math.ceil(rows / CHUNK_ROWS) * CHUNK_ROWS
        if buffers is None:
            buffers = (np.empty((padded, self.dim), self.dtype), np.empty(padded, self.dtype))
        x, noise = buffers
        fill = _BlockFill(self, first // CHUNK_ROWS, x[:padded], noise[:padded])
        block = Block(start=first, x=x[:rows], noise=noise[:rows], stream=self)
        return block, buffers, fill.start(threads)

    def blocks(self, n_samples: int, block_size: int, start: int = 0) -> Iterator[Block]:
        """Rows ``start .. start + n_samples`` in blocks of ``block_size`` rows, the next one
        prefetched (``start`` a multiple of ``CHUNK_ROWS``: a worker's share of a stream).

        Two buffers take turns (fresh ones would cost page faults on every block), so a
        block's arrays are overwritten as soon as the next block is requested: copy what must
        outlive the loop body.
        """
        check_block_size(block_size)
        check_start(start)
        stop_row = start + n_samples
        if n_samples <= 0:
            return
        first_rows = min(block_size, n_samples)
        # The first block is needed at once: every core draws it (what is left of it, if it
        # was begun ahead, ``draw_ahead``).
        pending = _take_ahead(self, start, first_rows) or self._begin(start, first_rows, None)
        pending[2].start(draw_threads() - 1)
        previous = None
        ahead_threads = getattr(_settings, "prefetch", PREFETCH_THREADS)
        while pending is not None:
            current, buffers, fill = pending
            if ahead_threads == 0:
                fill.start(draw_threads() - 1)  # drawn at need, on every core
            fill.wait()
            # The caller asked for this block, so it is done with the one before: reuse it.
            following = current.start + block_size
            pending = None
            if following < stop_row:
                rows = min(block_size, stop_row - following)
                pending = self._begin(following, rows, previous, ahead_threads)
            previous = buffers
            yield current


def _draw(state: tuple[np.ndarray, np.ndarray], out: np.ndarray, on_sphere: bool = False) -> None:
    """Fill ``out`` with the next standard normals of ``state``, drawn in float64 and rounded
    once into a float32 ``out``; ``on_sphere``: each row (2-d ``out``) scaled to norm
    ``sqrt(dim)``."""
    # (In a thread's own float64 array: a chunk's fresh 2 MB would cost its page faults.)
    wide = out if out.dtype == np.float64 else scratch("draw", out.shape, np.float64)
    normals.fill(*state, wide)
    if on_sphere:
        wide *= np.sqrt(wide.shape[1]) / np.linalg.norm(wide, axis=1, keepdims=True)
    if wide is not out:
        out[...] = wide


def check_block_size(block_size: int) -> None:
    """ValueError unless ``block_size`` is a positive multiple of ``CHUNK_ROWS`` (0 asked
    for empty blocks forever)."""
    if block_size <= 0 or block_size % CHUNK_ROWS:
        raise ValueError(f"block_size={block_size} must be a positive multiple of {CHUNK_ROWS}")


def check_start(start: int) -> None:
    """ValueError unless ``start`` is a row where a chunk begins: a chunk's rows are drawn
    from its first (a block labelled ``start`` would hold other rows)."""
    if start < 0 or start % CHUNK_ROWS:
        raise ValueError(f"start={start} must be a multiple of {CHUNK_ROWS}, at least 0")


def block_count(n_samples: int, block_size: int) -> int:
    """Number of blocks ``SampleStream.blocks`` yields."""
    return math.ceil(n_samples / block_size)
