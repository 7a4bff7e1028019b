"""The one streamed reduction without a cluster: a sum spread over pieces covers every row once
and in order, along the documented fixed binary tree, equals the local sum, and reports its
progress in blocks; a worker's copy of a summand is aligned and equal.

The executor here is here_client.HereClient, which computes at once in this process; the real
cluster is in test_distributed.py."""

import dataclasses

import numpy as np
import pytest

from giantstep.data import CHUNK_ROWS, SampleStream
from giantstep.reduction import (
    ALIGNMENT,
    BLOCKS_PER_TASK,
    aligned,
    check_executor,
    is_cluster,
    pieces,
    reduce_blocks,
)
from here_client import HereClient


@dataclasses.dataclass
class Rows:
    """A non-commutative 'sum': the starts of the blocks added, and the shape of the additions."""

    starts: list
    tree: object

    def __add__(self, other):
        return Rows(self.starts + other.starts, (self.tree, other.tree))


class RowStarts:
    name = "rows"

    def zero(self):
        return Rows([], None)

    def add(self, total, block):
        return Rows(total.starts + [block.start], len(total.starts) + 1)


class ColumnSums:
    name = "columns"

    def zero(self):
        return np.zeros(3)

    def add(self, total, block):
        total += block.x.sum(axis=0, dtype=np.float64)
        return total


def test_pieces_are_whole_blocks_in_order():
    assert pieces(1000, 256, 2) == [(0, 512), (512, 488)]
    assert pieces(512, 256, 2) == [(0, 512)]
    assert pieces(0, 256, 2) == []
    assert BLOCKS_PER_TASK == 8


B = BLOCKS_PER_TASK


# Pairs in order, the odd one out carried up; a leaf is the number of blocks in its piece.
@pytest.mark.parametrize(
    ("n_pieces", "tree"), [(1, 3), (2, (B, 3)), (3, ((B, B), 3)), (5, (((B, B), (B, B)), 3))]
)
def test_a_spread_sum_covers_every_block_once_along_the_fixed_tree(n_pieces, tree):
    block = CHUNK_ROWS
    n_samples = (n_pieces - 1) * B * block + 3 * block - 17  # a short last block
    stream = SampleStream(0, (9,), 3)
    client = HereClient()
    done = []
    spread = reduce_blocks(
        RowStarts(), stream, n_samples, block, executor=client, progress=done.append
    )
    local = reduce_blocks(RowStarts(), stream, n_samples, block)
    assert spread.starts == local.starts == list(range(0, n_samples, block))
    assert client.scattered == [(True, False)]  # the summand goes to every worker once
    # Piece tasks are not hashed (Dask would tokenize the N x d summand once per task).
    assert client.pure[:n_pieces] == [False] * n_pieces
    assert spread.tree == tree
    assert done == [len(local.starts)]  # progress counts blocks, once for a spread sum


def test_a_spread_sum_equals_the_local_sum():
    stream = SampleStream(3, (1, 2), 3)
    n_samples = 2 * BLOCKS_PER_TASK * CHUNK_ROWS + 100
    done = []
    local = reduce_blocks(ColumnSums(), stream, n_samples, CHUNK_ROWS, progress=done.append)
    spread = reduce_blocks(ColumnSums(), stream, n_samples, CHUNK_ROWS, executor=HereClient())
    dense = stream.rows(0, n_samples).x.sum(axis=0)
    np.testing.assert_allclose(local, dense, rtol=1e-12)
    np.testing.assert_allclose(spread, dense, rtol=1e-12)
    assert done == [1] * (2 * BLOCKS_PER_TASK + 1)
    empty = reduce_blocks(ColumnSums(), stream, 0, CHUNK_ROWS, executor=HereClient())
    np.testing.assert_array_equal(empty, np.zeros(3))


def test_only_a_client_like_executor_is_accepted():
    assert is_cluster(HereClient()) and not is_cluster(object()) and not is_cluster(None)
    check_executor(None)
    check_executor(HereClient())
    with pytest.raises(ValueError, match=r"^executor: expected None .* got int$"):
        check_executor(4)


def misaligned(shape, order="C", dtype=np.float64):
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(size + ALIGNMENT + 8, dtype=np.uint8)
    offset = (-raw.ctypes.data % ALIGNMENT + 8) % ALIGNMENT  # 8 bytes past a boundary
    array = raw[offset : offset + size].view(dtype)
    array = array.reshape(shape, order=order)
    array[...] = np.arange(array.size).reshape(shape)
    assert array.ctypes.data % ALIGNMENT == 8
    return array


@dataclasses.dataclass(frozen=True)
class Inner:
    weights: np.ndarray
    label: str = "inner"


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner
    bias: np.ndarray
    scale: float = 2.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16])
def test_a_copy_is_aligned_equal_and_in_the_same_memory_order(dtype):
    for order in ("C", "F"):
        array = misaligned((5, 3), order, dtype)
        copy = aligned(array)
        assert copy.ctypes.data % ALIGNMENT == 0
        np.testing.assert_array_equal(copy, array)
        assert copy.dtype == array.dtype and copy.shape == array.shape
        assert copy.flags.f_contiguous == (order == "F")
        assert copy.flags.c_contiguous == (order == "C")
    strided = misaligned((6, 4), "C", dtype)[::2, 1:]  # neither C- nor F-contiguous
    copy = aligned(strided)
    assert copy.ctypes.data % ALIGNMENT == 0 and copy.flags.c_contiguous
    np.testing.assert_array_equal(copy, strided)
    ready = np.zeros(16)
    if ready.ctypes.data % ALIGNMENT == 0:
        assert aligned(ready) is ready
    objects = np.array([None, 1], dtype=object)
    assert aligned(objects) is objects


def test_the_arrays_inside_nested_dataclasses_are_aligned():
    summand = Outer(Inner(misaligned((4, 2))), misaligned((3,)))
    copy = aligned(summand)
    assert copy.inner.weights.ctypes.data % ALIGNMENT == 0
    assert copy.bias.ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(copy.inner.weights, summand.inner.weights)
    np.testing.assert_array_equal(copy.bias, summand.bias)
    assert copy.scale == 2.0 and copy.inner.label == "inner"
    already = Outer(Inner(aligned(misaligned((2,)))), aligned(misaligned((2,))))
    assert aligned(already) is already  # nothing to copy: the same object
    assert aligned(Outer) is Outer and aligned("text") == "text"


@pytest.mark.parametrize("block_size", [0, -256, 100])
def test_a_block_size_that_is_not_a_positive_multiple_of_the_chunk_is_refused(block_size):
    """block_size 0 waited forever, here and on a cluster."""
    stream = SampleStream(0, (0,), 3)
    for executor in (None, HereClient()):
        with pytest.raises(ValueError, match=f"block_size={block_size} must be a positive"):
            reduce_blocks(ColumnSums(), stream, 1000, block_size, executor=executor)
