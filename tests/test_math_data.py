"""The streams against their definition (giantstep.data's docstring): chunk ``c`` of stream
``s`` of seed ``k`` is drawn by Philox keyed by ``SeedSequence(k, spawn_key=(DATA, *s, c))``,
first the inputs then the label noise; a block, a slice of rows or a read ahead is a view of
that one sequence of rows, whatever the block size, the start, the threads or the buffers.
The reference draws each chunk here with numpy alone."""

import threading
import time

import numpy as np
import pytest

from giantstep import data
from giantstep.data import CHUNK_ROWS, DATA, SampleStream, block_count

SEED, KEY, DIM = 11, (0, 3), 5


def reference(n_chunks, distribution="gaussian", dtype=np.float64, seed=SEED, key=KEY, dim=DIM):
    """x (n_chunks·256, dim) and noise: each chunk from its own generator, in order, drawn in
    float64 and rounded to ``dtype``."""
    xs, noises = [], []
    for c in range(n_chunks):
        sequence = np.random.SeedSequence(seed, spawn_key=(DATA, *key, c))
        rng = np.random.Generator(np.random.Philox(sequence))
        if distribution == "rademacher":
            x = 2.0 * rng.integers(0, 2, size=(CHUNK_ROWS, dim), dtype=np.int8) - 1
        else:
            x = rng.standard_normal((CHUNK_ROWS, dim))
            if distribution == "sphere":
                x = x * (np.sqrt(dim) / np.linalg.norm(x, axis=1))[:, None]
        xs.append(x.astype(dtype))
        noises.append(rng.standard_normal(CHUNK_ROWS).astype(dtype))
    return np.concatenate(xs), np.concatenate(noises)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("distribution", ["gaussian", "rademacher", "sphere"])
def test_rows_are_the_chunks_of_their_own_generators(distribution, dtype):
    """Rows 256..1000 (chunks 1..3, the last one cut) are the reference's, bit for bit (the
    sphere to rounding)."""
    stream = SampleStream(SEED, KEY, DIM, distribution=distribution, dtype=dtype)
    x, noise = reference(4, distribution, dtype)
    block = stream.rows(256, 1000)
    assert block.start == 256 and block.stream is stream
    assert block.x.dtype == dtype and block.noise.dtype == dtype
    assert block.x.shape == (744, DIM) and block.noise.shape == (744,)
    tolerance = 0 if distribution != "sphere" else (1e-15 if dtype == np.float64 else 1e-6)
    np.testing.assert_allclose(block.x, x[256:1000], rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(block.noise, noise[256:1000])
    if distribution == "rademacher":
        assert set(np.unique(block.x)) == {-1.0, 1.0}
    if distribution == "sphere":
        norms = np.linalg.norm(block.x.astype(np.float64), axis=1)
        np.testing.assert_allclose(norms, np.sqrt(DIM), rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_the_dtype_may_be_named_and_unknown_ones_are_refused():
    assert SampleStream(SEED, KEY, DIM, dtype="float32").dtype == np.dtype(np.float32)
    with pytest.raises(ValueError) as err:
        SampleStream(SEED, KEY, DIM, dtype="float16")
    assert str(err.value) == "dtype: 'float16' is not one of float64, float32"
    with pytest.raises(ValueError) as err:
        SampleStream(SEED, KEY, DIM, distribution="uniform")
    assert str(err.value) == "distribution: unknown 'uniform'; one of gaussian, rademacher, sphere"


@pytest.mark.parametrize(
    ("n_samples", "block_size", "start"),
    [
        (1000, 256, 0),
        (1000, 512, 0),
        (1024, 1024, 0),
        (700, 256, 512),
        (300, 2048, 256),
        (1, 256, 0),
    ],
)
def test_blocks_are_the_rows_cut_in_blocks(n_samples, block_size, start):
    """blocks(n, size, start) yields rows start .. start + n in order, each block of `size`
    rows but the last, whatever the size (block-size invariance) and the start."""
    stream = SampleStream(SEED, KEY, DIM)
    x, noise = reference(12)
    blocks = [
        (b.start, b.x.copy(), b.noise.copy(), b.stream)
        for b in stream.blocks(n_samples, block_size, start)
    ]
    assert len(blocks) == block_count(n_samples, block_size)
    assert [b[0] for b in blocks] == list(range(start, start + n_samples, block_size))
    assert all(b[3] is stream for b in blocks)
    np.testing.assert_array_equal(
        np.concatenate([b[1] for b in blocks]), x[start : start + n_samples]
    )
    np.testing.assert_array_equal(
        np.concatenate([b[2] for b in blocks]), noise[start : start + n_samples]
    )


def test_blocks_without_a_start_begin_at_row_zero():
    stream = SampleStream(SEED, KEY, DIM)
    first = next(stream.blocks(300, 256))
    assert first.start == 0
    np.testing.assert_array_equal(first.x, reference(1)[0])


@pytest.mark.parametrize("n_samples", [0, -5])
def test_no_rows_no_blocks(n_samples):
    assert list(SampleStream(SEED, KEY, DIM).blocks(n_samples, 256)) == []


def test_one_row_is_one_block():
    blocks = list(SampleStream(SEED, KEY, DIM).blocks(1, 256))
    assert len(blocks) == 1 and blocks[0].x.shape == (1, DIM)
    np.testing.assert_array_equal(blocks[0].x, reference(1)[0][:1])


def test_block_count():
    """ceil(n / size)."""
    assert [block_count(n, 256) for n in (0, 1, 255, 256, 257, 1000, 1024)] == [0, 1, 1, 1, 2, 4, 4]


def test_block_sizes_and_starts_off_the_chunks_are_refused():
    stream = SampleStream(SEED, KEY, DIM)
    for size in (300, 0, -256):  # 0 asked for empty blocks forever
        with pytest.raises(ValueError) as err:
            list(stream.blocks(1000, size))
        assert str(err.value) == f"block_size={size} must be a positive multiple of 256"
    for start in (100, -256):
        with pytest.raises(ValueError) as err:
            stream.rows(start, 600)
        assert str(err.value) == f"start={start} must be a multiple of 256, at least 0"
    with pytest.raises(ValueError, match="start=10 must be"):  # it labelled rows 0.. as 10..
        list(stream.blocks(1000, 256, start=10))


@pytest.mark.parametrize("stop", [256, 0, 10])
def test_rows_without_a_row_are_refused_not_waited_for(stop):
    """rows(256, 256) waited forever for a block of no chunks."""
    with pytest.raises(ValueError, match=f"stop={stop} must be above start=256"):
        SampleStream(SEED, KEY, DIM).rows(256, stop)


def test_rows_overwrite_buffers_large_enough_and_allocate_otherwise():
    """rows(start, stop, buffers) writes into the buffers' arrays when they hold the padded
    rows (exactly or more), and allocates when they do not: the same rows either way."""
    stream = SampleStream(SEED, KEY, DIM)
    x, noise = reference(4)
    exact = stream.rows(0, 512)
    held = exact.x.copy()
    again = stream.rows(512, 1000, buffers=exact)  # 488 rows, padded to 512: fits exactly
    assert np.shares_memory(again.x, exact.x) and np.shares_memory(again.noise, exact.noise)
    np.testing.assert_array_equal(again.x, x[512:1000])
    np.testing.assert_array_equal(again.noise, noise[512:1000])
    assert not np.array_equal(exact.x[:10], held[:10])  # overwritten
    small = stream.rows(0, 256)
    grown = stream.rows(0, 1000, buffers=small)
    assert not np.shares_memory(grown.x, small.x)
    np.testing.assert_array_equal(grown.x, x[:1000])


def test_blocks_take_turns_with_two_buffers():
    """The next block but one is written into this block's arrays (two buffers take turns),
    and every block holds its own rows when it is yielded."""
    stream = SampleStream(SEED, KEY, DIM)
    x, _ = reference(6)
    blocks = []
    for block in stream.blocks(1536, 256):
        np.testing.assert_array_equal(block.x, x[block.start : block.start + 256])
        blocks.append(block)
    assert np.shares_memory(blocks[0].x, blocks[2].x) and np.shares_memory(blocks[1].x, blocks[3].x)
    assert not np.shares_memory(blocks[0].x, blocks[1].x)


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_prefetching_and_drawing_threads_change_no_row(monkeypatch, threads):
    """Any number of background threads, drawing ahead or at need, gives the same rows."""
    monkeypatch.setattr(data, "draw_threads", lambda: threads + 1)
    stream = SampleStream(SEED, KEY, DIM)
    x, noise = reference(8)
    with data.prefetching(threads):
        blocks = [(b.x.copy(), b.noise.copy()) for b in stream.blocks(2000, 512)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), x[:2000])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), noise[:2000])
    np.testing.assert_array_equal(stream.rows(0, 2000).x, x[:2000])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_block_drawn_ahead_is_taken_by_its_stream_only(monkeypatch, threads):
    """``draw_ahead`` begins a stream's first block; the stream's read takes it (same rows),
    a read of another stream or set of rows drops it and draws its own, and it does nothing
    outside ``prefetching(0)`` or without a core to spare."""
    monkeypatch.setattr(data, "draw_threads", lambda: threads)
    stream, other = SampleStream(SEED, KEY, DIM), SampleStream(SEED, (9, 9), DIM)
    x, noise = reference(8)

    def read(s, rows=2000, size=512):
        return [(b.x.copy(), b.noise.copy()) for b in s.blocks(rows, size)]

    with data.prefetching(0):
        data.draw_ahead(stream, 2000, 512)
        pending = getattr(data._settings, "ahead", None)
        assert (pending is not None) == (threads > 1)
        blocks = read(stream)
        assert getattr(data._settings, "ahead", None) is None  # taken
        np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), x[:2000])
        np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), noise[:2000])
        for ahead_of, rows, size in ((other, 2000, 512), (stream, 2000, 256), (stream, 300, 512)):
            data.draw_ahead(ahead_of, rows, size)
            blocks = read(stream)  # not the block begun: dropped, the rows drawn anew
            np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), x[:2000])
        data.draw_ahead(stream, 2000, 512)
    assert getattr(data._settings, "ahead", None) is None  # dropped with the setting
    data.draw_ahead(stream, 2000, 512)  # reads prefetching here: nothing begun
    assert getattr(data._settings, "ahead", None) is None


def test_draw_ahead_in_a_thread_that_never_set_prefetching_does_nothing():
    """A thread without a prefetch setting of its own (a user's, a worker's) is outside
    ``prefetching(0)``: nothing begun, no error."""
    stream = SampleStream(SEED, KEY, DIM)
    pending = []

    def call():
        data.draw_ahead(stream, 2000, 512)
        pending.append(getattr(data._settings, "ahead", None))

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    assert pending == [None]


def test_the_blocks_of_a_float32_stream_hold_float32_rows_and_noise():
    """The label noise is rounded once to the stream's dtype, as the rows are (a float64 noise
    buffer would carry unrounded noise into float32 labels)."""
    stream = SampleStream(SEED, KEY, DIM, dtype=np.float32)
    x, noise = reference(4, "gaussian", np.float32)
    block = next(stream.blocks(1000, 1024))
    assert block.x.dtype == np.float32 and block.noise.dtype == np.float32
    np.testing.assert_array_equal(block.x, x[:1000])
    np.testing.assert_array_equal(block.noise, noise[:1000])


@pytest.mark.parametrize("shape", [(64, 800), (1, 1), (0, 5), (3,)])
def test_standard_normals_are_numpys(shape):
    """``standard_normals`` gives the numbers of the key's numpy generator, bit for bit."""
    want = data.generator(SEED, 1).standard_normal(shape)
    np.testing.assert_array_equal(data.standard_normals(shape, SEED, 1), want)


def test_a_dropped_block_stops_drawing():
    """A block drawn ahead and dropped leaves its unclaimed chunks undrawn."""
    stream = SampleStream(SEED, KEY, DIM)
    _, _, fill = stream._begin(0, 4096, None)  # no thread on it yet
    fill.cancel()
    fill.start(1)
    fill.work()
    assert fill.filled == 0 and not fill.done.is_set()


def test_a_stream_read_in_a_new_thread_has_its_rows():
    """The prefetch setting is per thread: a thread that never set it reads with the
    default, and gets the rows of the definition."""
    stream = SampleStream(SEED, KEY, DIM)
    read = []
    thread = threading.Thread(target=lambda: read.extend(
        (b.x.copy(), b.noise.copy()) for b in stream.blocks(1000, 256)))  # fmt: skip
    thread.start()
    thread.join()
    x, noise = reference(4)
    np.testing.assert_array_equal(np.concatenate([r[0] for r in read]), x[:1000])
    np.testing.assert_array_equal(np.concatenate([r[1] for r in read]), noise[:1000])


def test_a_failing_chunk_is_raised_in_the_caller(monkeypatch):
    """An error while drawing a chunk (in any thread) is raised by the call that needs it."""
    fill = SampleStream._fill_chunk

    def failing(self, chunk, x, noise):
        if chunk == 2:
            raise RuntimeError("chunk 2 failed")
        fill(self, chunk, x, noise)

    monkeypatch.setattr(SampleStream, "_fill_chunk", failing)
    stream = SampleStream(SEED, KEY, DIM)
    with pytest.raises(RuntimeError, match="chunk 2 failed"):
        stream.rows(0, 1024)
    with pytest.raises(RuntimeError, match="chunk 2 failed"):
        list(stream.blocks(1024, 256))
    np.testing.assert_array_equal(stream.rows(0, 512).x, reference(2)[0])


@pytest.mark.parametrize("chunks", [1, 2])
def test_the_caller_waits_for_a_chunk_another_thread_is_drawing(monkeypatch, chunks):
    """A block whose every chunk a helper thread claimed first: the caller's wait() returns
    only once they are drawn (a block of one chunk counted as done from the start was read
    half drawn)."""
    fill = SampleStream._fill_chunk

    def slow(self, chunk, x, noise):
        time.sleep(0.2)
        fill(self, chunk, x, noise)

    monkeypatch.setattr(SampleStream, "_fill_chunk", slow)
    stream = SampleStream(SEED, KEY, DIM)
    x = np.zeros((chunks * CHUNK_ROWS, DIM))
    noise = np.zeros(chunks * CHUNK_ROWS)
    block = data._BlockFill(stream, 0, x, noise).start(chunks)
    time.sleep(0.05)  # the helpers claim every chunk before the caller asks
    block.wait()
    np.testing.assert_array_equal(x, reference(chunks)[0])


@pytest.mark.parametrize(
    ("cores", "limit", "expected"),
    [
        (4, None, 4),
        (4, "2", 2),
        (4, "1", 1),
        (2, "8", 2),
        (4, "0", 4),
        (4, "", 4),
        (4, "two", 4),
        (1, None, 1),
    ],  # fmt: skip
)
def test_draw_threads_are_the_cores_capped_by_omp_num_threads(monkeypatch, cores, limit, expected):
    """The cores this process may use (its affinity, not the machine's count), capped by a
    positive integer OMP_NUM_THREADS; anything else in it is ignored."""
    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(data.os, "cpu_count", lambda: 64)
    if limit is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", limit)
    assert data.draw_threads() == expected


def test_draw_threads_without_affinity_are_the_cpu_count(monkeypatch):
    monkeypatch.delattr(data.os, "sched_getaffinity", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(data.os, "cpu_count", lambda: 3)
    assert data.draw_threads() == 3
    monkeypatch.setattr(data.os, "cpu_count", lambda: None)  # unknown: one
    assert data.draw_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert data.draw_threads() == 1


def test_generators_are_keyed_by_seed_and_key():
    """generator(seed, *key) is Philox keyed by SeedSequence(seed, spawn_key=key)."""
    expected = np.random.Generator(np.random.Philox(np.random.SeedSequence(5, spawn_key=(1, 2))))
    np.testing.assert_array_equal(data.generator(5, 1, 2).random(8), expected.random(8))
    assert not np.array_equal(data.generator(5, 1, 2).random(8), data.generator(5, 1).random(8))
