"""The one streamed reduction: every sum over samples in giantstep is computed here.

A streamed statistic is a :class:`StreamedSum`: ``zero()`` gives the empty sum and
``add(total, block)`` adds one block of rows into it (in place, for speed); two partial sums
add with ``+``. :func:`reduce_blocks` runs it over the rows ``0 .. n_samples`` of a stream —
the model is Dask's ``reduction(chunk, combine, aggregate)``. Adding a statistic is writing one
such class; nothing else in the package loops over the blocks of a stream.

**Where the blocks are summed** is the ``executor`` argument, never a global:

- ``None``: here, block after block, with the next block drawn on a second thread while BLAS
  works on this one (unless the caller draws at need, ``data.prefetching(0)``, as a run does);
- a Dask ``distributed.Client`` (or an object with its ``scatter``, ``submit`` and ``gather``):
  the rows are cut into pieces of ``BLOCKS_PER_TASK`` whole blocks; each piece is summed on a
  worker from its row range alone (the block-keyed randomness of :mod:`giantstep.data` makes
  the rows those of the local run), and the partial sums are added along a fixed binary tree
  over the pieces. The tree depends only on the number of pieces — never on the number of
  workers or on which finished first — so the result is the same on any cluster, and equals
  the local sum up to the order of the float64 additions (about 1e-16 relative).

**A small network's block is summed in parts.** Its products are thin and run on one BLAS
thread (``giantstep.linalg``), so one block keeps one core busy. A summand whose ``in_parts``
is true has each block cut into ``BLOCK_PARTS`` row ranges, each summed from zero — on the
process's helper threads when it has cores for them — and added to the total in order: the same
numbers on any number of cores (a sweep's one-core worker sums the parts one after the other);
the sum of a block in parts differs from the block's own sum by rounding only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import numpy as np

from giantstep.data import (
    CHUNK_ROWS,
    Block,
    SampleStream,
    check_block_size,
    draw_threads,
    helper_pool,
)

#: Blocks per task when a sum is spread over a cluster; fixed (not derived from the worker
#: count) so that the order of the additions, hence the result, is the same on any cluster.
BLOCKS_PER_TASK = 8

#: Row ranges a block of an ``in_parts`` summand is summed in: fixed (not the core count), so
#: that the numbers do not depend on the machine. Cut between chunks: the rows keyed by chunk
#: (label corruption, its decoys) are drawn from a chunk's first row.
BLOCK_PARTS = 2

#: Bytes to which a worker aligns the arrays of a summand (a cache line; see :func:`aligned`).
ALIGNMENT = 64

T = TypeVar("T")
Progress = Callable[[int], object] | None


class StreamedSum(Protocol[T]):
    """A sum over the rows of a stream, one block at a time.

    ``name`` says what is summed (``"gradient"``, ``"gram"``, ...). Instances are sent to the
    workers of a cluster, so they hold only picklable data (arrays, activations, teachers).
    """

    name: str
    #: Whether each block is summed in parts (module docstring); False if absent.
    in_parts: bool

    def zero(self) -> T:
        """The empty sum (float64 accumulators, whatever the dtype of the blocks)."""
        ...

    def add(self, total: T, block: Block) -> T:
        """Add one block of rows into ``total`` (in place where it can) and return it."""
        ...


def is_cluster(executor: Any) -> bool:
    """Whether ``executor`` can spread a sum: it has a Dask client's scatter/submit/gather."""
    return all(hasattr(executor, name) for name in ("scatter", "submit", "gather"))


def check_executor(executor: Any) -> None:
    """Raise ValueError naming ``executor`` unless it is None or a Dask-client-like object."""
    if executor is not None and not is_cluster(executor):
        raise ValueError(
            "executor: expected None (compute here) or a Dask distributed.Client (an object "
            f"with scatter, submit and gather), got {type(executor).__name__}"
        )


def reduce_blocks(
    summand: StreamedSum[T],
    stream: SampleStream,
    n_samples: int,
    block_size: int,
    *,
    executor: Any = None,
    progress: Progress = None,
) -> T:
    """The sum of ``summand`` over rows ``0 .. n_samples`` of ``stream``.

    Parameters
    ----------
    summand : StreamedSum
        What to sum: ``zero()`` and ``add(total, block)``.
    stream : SampleStream
        The rows (a gradient batch, the ridge set, the test set).
    n_samples : int
        Number of rows summed.
    block_size : int
        Rows per block in memory, a multiple of ``data.CHUNK_ROWS``.
    executor : None or distributed.Client, optional
        Where the blocks are summed (module docstring); None sums them here.
    progress : callable, optional
        Called with the number of blocks done, as they are done.

    Returns
    -------
    The sum, of the type ``summand.zero()`` returns.

    Raises
    ------
    ValueError
        If ``executor`` is neither None nor a Dask client, or the block size is not a positive
        multiple of the chunk.

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.data import SampleStream
    >>> class RowCount:
    ...     name = "rows"
    ...     def zero(self):
    ...         return np.zeros(1)
    ...     def add(self, total, block):
    ...         total += len(block.x)
    ...         return total
    >>> reduce_blocks(RowCount(), SampleStream(0, (0,), 3), 1000, 256)
    array([1000.])
    """
    check_executor(executor)
    check_block_size(block_size)
    if executor is not None:
        return _spread(summand, stream, n_samples, block_size, executor, progress)
    total = summand.zero()
    for block in stream.blocks(n_samples, block_size):
        total = add_block(summand, total, block)
        if progress:
            progress(1)
    return total


def parts(rows: int) -> list[slice]:
    """The row ranges of a block of ``rows`` summed in parts: ``BLOCK_PARTS`` ranges (fewer if
    the block has fewer chunks), each cut at the chunk boundary (``data.CHUNK_ROWS``) nearest
    to an even split."""
    count = min(BLOCK_PARTS, math.ceil(rows / CHUNK_ROWS))
    cuts = [CHUNK_ROWS * round(k * rows / (count * CHUNK_ROWS)) for k in range(count)] + [rows]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def add_block(summand: StreamedSum[T], total: T, block: Block) -> T:
    """``summand.add(total, block)``; if ``summand.in_parts``, the sums of the block's parts
    (the first here, the others on the helper threads if this process has the cores) added
    to ``total`` in order."""
    ranges = parts(len(block.x)) if getattr(summand, "in_parts", False) else []
    if len(ranges) < 2:
        return summand.add(total, block)
    rows = [Block(block.start + r.start, block.x[r], block.noise[r], block.stream) for r in ranges]
    if draw_threads() > 1:
        others = [helper_pool().submit(_sum_of, summand, part) for part in rows[1:]]
        sums = [_sum_of(summand, rows[0])] + [other.result() for other in others]
    else:
        sums = [_sum_of(summand, part) for part in rows]
    for part in sums:
        total += part
    return total


def _sum_of(summand: StreamedSum[T], block: Block) -> T:
    return summand.add(summand.zero(), block)


def pieces(n_samples: int, block_size: int, blocks_per_task: int) -> list[tuple[int, int]]:
    """(first row, row count) of each piece of a spread sum: whole blocks, in order."""
    rows = block_size * blocks_per_task
    return [(s, min(rows, n_samples - s)) for s in range(0, n_samples, rows)]


def aligned(value: Any) -> Any:
    """``value`` with every array in it (through nested dataclasses) at an address aligned for
    its type, copied where it is not.

    A worker unpickles the summand's arrays in place from the message it received, at whatever
    offset they had there (doubles at odd addresses were seen), and the last bits of the BLAS
    products then changed with that offset: one worker and two gave different sums when the
    pickled size of a summand changed by a few bytes. Copied to cache-line boundaries, they do
    not.
    """
    if isinstance(value, np.ndarray):
        if value.ctypes.data % ALIGNMENT == 0 or value.dtype.hasobject:
            return value
        raw = np.empty(value.nbytes + ALIGNMENT, dtype=np.uint8)
        offset = -raw.ctypes.data % ALIGNMENT
        order = "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
        copy = raw[offset : offset + value.nbytes].view(value.dtype)
        copy = copy.reshape(value.shape, order=order)
        copy[...] = value
        return copy
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changed = {}
    for field in dataclasses.fields(value):
        if field.init:
            old = getattr(value, field.name)
            new = aligned(old)
            if new is not old:
                changed[field.name] = new
    return dataclasses.replace(value, **changed) if changed else value


def _piece_sum(summand, stream: SampleStream, start: int, count: int, block_size: int):
    """On a worker: the sum over rows ``start .. start + count`` (whole blocks of the run)."""
    summand = aligned(summand)
    total = summand.zero()
    for block in stream.blocks(count, block_size, start=start):
        total = add_block(summand, total, block)
    return total


def _add(a: Any, b: Any) -> Any:
    return a + b


def _spread(summand, stream, n_samples, block_size, client, progress):
    # The summand carries the weights (N × d): send it to every worker once, not per task.
    shared = client.scatter(summand, broadcast=True, hash=False)
    level = [
        client.submit(_piece_sum, shared, stream, start, count, block_size, pure=False)
        for start, count in pieces(n_samples, block_size, BLOCKS_PER_TASK)
    ]
    if not level:
        return summand.zero()
    # A fixed binary tree: pairs in order, the odd one out carried up.
    while len(level) > 1:
        following = [
            client.submit(_add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            following.append(level[-1])
        level = following
    total = client.gather(level[0])
    if progress:
        progress(math.ceil(n_samples / block_size))
    return total
