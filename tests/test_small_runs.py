"""Runs made faster: blocks drawn at need, the Dandi pool, idle threads that sleep and passes
that take turns on numba's workqueue layer (no change of numbers), labels from the forward
product and small networks' blocks summed in parts (rounding only)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pytest

import giantstep
import giantstep.experiment as experiment
from giantstep import data, executors, kernels, reduction
from giantstep.activations import get_activation
from giantstep.data import RIDGE, TRAIN, SampleStream
from giantstep.model import initialize
from giantstep.readout import GramSum
from giantstep.reproduce import dandi
from giantstep.targets import Teacher
from giantstep.train import GradientSum

SMALL = {
    "preset": "dandi",
    "dim": 300,
    "width": 32,
    "target": {"expression": "z1 + z1*z2"},
    "train": {"batch_size": 1200, "steps": 3},
    "readout": {"samples": 1024},
    "test": {"samples": 768},
    "compute": {"block_size": 512},  # several blocks per set, each summed in parts
}


def _numbers(result) -> dict:
    out = result.model_dump(mode="json")
    for key in ("seconds", "peak_memory_bytes", "version"):
        out.pop(key)
    return out


def test_a_block_is_cut_into_parts_between_chunks_nearest_an_even_split():
    assert reduction.parts(255) == [slice(0, 255)]  # one chunk: one part
    assert reduction.parts(300) == [slice(0, 256), slice(256, 300)]
    assert reduction.parts(768) == [slice(0, 512), slice(512, 768)]  # 384 is mid-chunk
    assert reduction.parts(3200) == [slice(0, 1536), slice(1536, 3200)]
    for rows in (257, 700, 2048, 4096, 5000):
        ranges = reduction.parts(rows)
        assert len(ranges) == reduction.BLOCK_PARTS and ranges[-1].stop == rows
        assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:], strict=False))
        assert all(r.start % data.CHUNK_ROWS == 0 and r.stop > r.start for r in ranges)
        assert abs(ranges[0].stop - rows / 2) <= data.CHUNK_ROWS / 2


def test_a_small_networks_block_is_summed_in_parts_the_same_on_any_number_of_cores(
    monkeypatch,
):
    """The parts' sums, added in order to the total so far, whether the parts are summed on
    two threads or one after the other; they are the block's own sum to rounding; a large
    network is not cut."""
    teacher = Teacher.draw(3, "z1 + z1*z2", 120, 0.3, corruption=0.2)
    network = initialize(3, 40, 120, activation=get_activation("tanh"))
    stream = SampleStream(3, (TRAIN, 0), 120)
    earlier, block = (stream.rows(start, start + 700) for start in (768, 0))
    for summand in (
        GradientSum.of(network, teacher, "y-f", np.float64),
        GramSum.of(network, teacher, np.float64),
    ):
        assert summand.in_parts
        so_far = summand.add(summand.zero(), earlier)  # the order of the additions shows

        def total_so_far(so_far=so_far, summand=summand):
            return so_far + summand.zero()  # a fresh copy

        monkeypatch.setattr(reduction, "draw_threads", lambda: 2)
        threads = reduction.add_block(summand, total_so_far(), block)
        monkeypatch.setattr(reduction, "draw_threads", lambda: 1)
        alone = reduction.add_block(summand, total_so_far(), block)
        by_hand = total_so_far()
        for rows in reduction.parts(700):
            part = data.Block(rows.start, block.x[rows], block.noise[rows], block.stream)
            by_hand += summand.add(summand.zero(), part)
        whole = summand.add(total_so_far(), block)
        for got in (threads, alone):
            for mine, theirs, plain in zip(_arrays(got), _arrays(by_hand), _arrays(whole),
                                           strict=True):  # fmt: skip
                assert np.array_equal(mine, theirs)
                np.testing.assert_allclose(mine, plain, rtol=1e-12, atol=1e-13)
    large = initialize(0, 520, 520, activation=get_activation("relu"))  # N·d ≥ 2^18
    assert not GradientSum.of(large, Teacher.draw(0, "z1", 520), "y-f", np.float64).in_parts
    assert not GramSum.of(large, Teacher.draw(0, "z1", 520), np.float64).in_parts


@dataclasses.dataclass(frozen=True)
class _RowCounts:
    """A summand without ``in_parts``: it records the rows of each block it is given."""

    name = "rows"

    def zero(self) -> list[int]:
        return []

    def add(self, total: list[int], block: data.Block) -> list[int]:
        return total + [len(block.x)]


def test_a_summand_gets_whole_blocks_unless_it_asks_for_parts(monkeypatch):
    stream = SampleStream(0, (TRAIN, 0), 8)
    assert reduction.reduce_blocks(_RowCounts(), stream, n_samples=1800, block_size=768) == [
        768, 768, 264,
    ]  # fmt: skip
    in_parts = type("InParts", (_RowCounts,), {"in_parts": True})()
    for threads in (1, 2):
        monkeypatch.setattr(reduction, "draw_threads", lambda threads=threads: threads)
        counts = reduction.reduce_blocks(in_parts, stream, n_samples=1800, block_size=768)
        assert counts == [512, 256, 512, 256, 256, 8]  # 264 rows: a chunk and 8 rows


def _arrays(total) -> list[np.ndarray]:
    if isinstance(total, np.ndarray):
        return [total]
    return [total.gram, total.cross, np.array([total.sum_sq, total.count])]


def test_a_small_run_has_the_same_numbers_with_one_core(monkeypatch):
    both = giantstep.run(SMALL)
    monkeypatch.setattr(reduction, "draw_threads", lambda: 1)
    assert _numbers(giantstep.run(SMALL)) == _numbers(both)


def test_the_dandi_pool_gives_the_runs_made_one_after_the_other(monkeypatch):
    cases = [dandi.STAIRCASE_CASES[0], dandi.LEAP_CASES[2]]
    monkeypatch.setattr(dandi, "_RUNS", {})
    monkeypatch.setattr(dandi, "POOL_MIN_DRAWS", 0)  # the pool at the quick sizes
    monkeypatch.setattr(dandi, "cores", lambda: 2)  # and on a machine of one core too
    dandi.simulate_all(cases, True, 1)
    pooled = dict(dandi._RUNS)
    assert len(pooled) == 4
    dandi._RUNS.clear()
    for case in cases:
        for dim in case.quick_dims:
            dandi.simulate(case, dim, 0)
    assert pooled.keys() == dandi._RUNS.keys()
    for key, steps in pooled.items():
        for here, there in zip(dandi._RUNS[key], steps, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(here, there, strict=True))


def _blas_threads() -> str | None:
    return os.environ.get("OPENBLAS_NUM_THREADS")


def test_pool_workers_and_their_caller_get_the_thread_count_asked_for(monkeypatch):
    for variable in executors.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with executors.local_processes(1, threads=1) as pool:
        # The caller computes beside its worker with one drawing thread, as the worker does.
        assert (pool.submit(_blas_threads).result(), data.draw_threads()) == ("1", 1)
    assert _blas_threads() is None
    with pytest.raises(ValueError, match="threads: must be at least 1"):
        with executors.local_processes(1, threads=0):
            pass


def test_a_large_run_draws_at_need_and_changes_no_number(monkeypatch):
    large = {
        "dim": 512,  # N·d = 2^18: BLAS on every thread
        "width": 512,
        "train": {"batch_size": 1536},
        "compute": {"block_size": 512},
        "readout": {"samples": 1024, "ridge": [0.01]},
        "test": {"samples": 512},
    }
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # as a user's process has it
    started = []
    start = data._BlockFill.start

    def recording(self, threads):
        started.append((self.stream.key, self.first_chunk, threads))
        return start(self, threads)

    monkeypatch.setattr(data._BlockFill, "start", recording)
    at_need = giantstep.run(large)
    every, ahead = data.draw_threads() - 1, min(data.draw_threads() - 1, 1)
    # Batch 0's first block begun ahead on a spare core while the run builds its network
    # (data.draw_ahead), then drawn on every core when it is needed; the next one begun with
    # no thread ahead, then started on every core when it is needed.
    assert started[0] == ((TRAIN, 0), 0, ahead) and ((TRAIN, 0), 0, every) in started
    second = [threads for key, chunk, threads in started if (key, chunk) == ((TRAIN, 0), 2)]
    assert second[:2] == [0, every]
    # The ridge set's first block is begun ahead while the last step is measured.
    assert ((RIDGE, 0), 0, ahead) in started
    monkeypatch.setattr(experiment, "prefetching", lambda threads: nullcontext())
    assert _numbers(giantstep.run(large)) == _numbers(at_need)
    with data.prefetching(0):
        stream = data.SampleStream(3, (0, 0), 7)
        drawn = [b.x.copy() for b in stream.blocks(2048, 512)]
    assert np.array_equal(np.concatenate(drawn), stream.rows(0, 2048).x)


@pytest.mark.parametrize(
    ("changes", "taken"),
    [
        ({"train": {"steps": 0, "batch_size": 512}}, (RIDGE, 0)),  # no steps: the ridge set
        ({"spectrum": {"enabled": True}}, (TRAIN, 0)),  # the spectrum's ζ reads batch 0 first
    ],
)
def test_a_run_begins_ahead_the_set_it_reads_next(monkeypatch, changes, taken):
    """The block a run begins ahead is the one its next read takes (none is dropped), and the
    numbers are those of a run that begins none."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # as a user's process has it
    if data.draw_threads() < 2:
        pytest.skip("blocks are begun ahead only with a core to spare")
    config = {
        "dim": 64,
        "width": 32,
        "train": {"batch_size": 512},
        "readout": {"samples": 1024, "ridge": [0.01]},
        "test": {"samples": 512},
    } | changes
    dropped, taken_keys = [], []
    take, cancel = data._take_ahead, data._BlockFill.cancel

    def taking(stream, start, rows):
        block = take(stream, start, rows)
        if block is not None:
            taken_keys.append(stream.key)
        return block

    monkeypatch.setattr(data, "_take_ahead", taking)
    monkeypatch.setattr(data._BlockFill, "cancel", lambda self: dropped.append(1) or cancel(self))
    ahead = giantstep.run(config)
    assert taken_keys[-1] == taken and not dropped
    for module in (experiment, giantstep.train):
        monkeypatch.setattr(module, "draw_ahead", lambda *args: None)
    assert _numbers(giantstep.run(config)) == _numbers(ahead)


def test_labels_from_the_forward_product_are_the_labels_of_their_own_product():
    """A small network takes h = X W*ᵀ from the last r columns of X [W; W*]ᵀ: the gradient sum
    and the Gram statistics are those of the separate products to rounding (the pre-activations
    are the same bits), on a block with noise and corruption; a large network keeps two."""
    teacher = Teacher.draw(3, "z1 + z1*z2 - He3(z3)", 120, 0.3, corruption=0.2)
    block = next(SampleStream(3, (TRAIN, 0), 120).blocks(700, 768))
    for name in ("relu", "tanh", "erf"):
        network = initialize(3, 40, 120, activation=get_activation(name))
        for residual in ("y-f", "y"):
            fused = GradientSum.of(network, teacher, residual, np.float64)
            assert fused.forward is not None and fused.forward.shape == (43, 120)
            separate = dataclasses.replace(fused, forward=None)
            got = fused.add(fused.zero(), block)
            want = separate.add(separate.zero(), block)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
        gram = GramSum.of(network, teacher, np.float64)
        assert gram.weights.shape == (120, 43)
        plain = GramSum(network.first_layer.T.copy(), network.activation, teacher, 40)
        got, want = gram.add(gram.zero(), block), plain.add(plain.zero(), block)
        np.testing.assert_allclose(got.gram, want.gram, rtol=1e-12)
        np.testing.assert_allclose(got.cross, want.cross, rtol=1e-12)
        assert got.sum_sq == want.sum_sq and got.count == want.count == 700
    large = initialize(0, 520, 520, activation=get_activation("relu"))  # N·d ≥ 2^18
    assert GradientSum.of(large, Teacher.draw(0, "z1", 520), "y-f", np.float64).forward is None
    assert GramSum.of(large, Teacher.draw(0, "z1", 520), np.float64).weights.shape == (520, 520)


def test_the_passes_give_the_same_bits_on_a_view_of_a_wider_block():
    """The elementwise passes go row by row: on the first N columns of an (rows, N + r) array
    they give the bits they give on a contiguous copy, and leave the other columns alone."""
    rng = np.random.default_rng(0)
    wide = 2 * rng.standard_normal((300, 35))
    for name in ("relu", "tanh", "erf", "He3", "softplus"):
        activation = get_activation(name)
        view, copy = wide.copy(), np.ascontiguousarray(wide[:, :32])
        value, slope = kernels.values_and_slopes(activation, view[:, :32], np.empty((300, 32)))
        value_c, slope_c = kernels.values_and_slopes(activation, copy, np.empty((300, 32)))
        np.testing.assert_array_equal(value, value_c)
        np.testing.assert_array_equal(slope, slope_c)
        np.testing.assert_array_equal(view[:, 32:], wide[:, 32:])
        if name in ("relu", "He3"):  # the numpy path's operations: its bits
            got = kernels.values(activation, wide.copy()[:, :32])
            np.testing.assert_array_equal(got, activation(wide[:, :32]))


def test_importing_giantstep_makes_idle_threads_sleep_unless_the_user_chose():
    """Set before numpy loads OpenBLAS (read only then); a user's own value is kept."""
    show = (
        "import builtins, os\n"
        "seen, real_import = [], builtins.__import__\n"
        "def recording(name, *args, **kwargs):\n"
        "    if name == 'numpy' and not seen:  # the first import of numpy loads OpenBLAS\n"
        "        seen.append(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n"
        "    return real_import(name, *args, **kwargs)\n"
        "builtins.__import__ = recording\n"
        "import giantstep\n"
        "print(seen[0], os.environ['OPENBLAS_THREAD_TIMEOUT'], os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")}  # fmt: skip
    for chosen, expected in (({}, "4 4 passive"), ({"OMP_WAIT_POLICY": "active"}, "4 4 active")):
        output = subprocess.run([sys.executable, "-c", show], env=env | chosen,
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert output.split() == expected.split()


def test_a_small_run_in_parts_runs_on_numbas_workqueue_layer_with_the_same_numbers():
    """The workqueue layer (numba's fallback without OpenMP or TBB) aborts the process when two
    threads launch passes at once, as a small network's block parts did."""
    child = (
        "import json, sys, numba, giantstep\n"
        "from giantstep import data\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_small_runs import SMALL, _numbers\n"
        "numbers = _numbers(giantstep.run(SMALL))\n"
        "print(numba.threading_layer(), data.draw_threads(), json.dumps(numbers))\n"
    )
    env = os.environ | {"NUMBA_THREADING_LAYER": "workqueue"}
    done = subprocess.run([sys.executable, "-c", child, os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    layer, threads, numbers = done.stdout.strip().split(" ", 2)
    assert layer == "workqueue" and int(threads) == data.draw_threads()
    assert json.loads(numbers) == json.loads(json.dumps(_numbers(giantstep.run(SMALL))))
