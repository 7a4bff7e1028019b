"""Small runs made faster without a change of numbers: read-ahead and the Dandi pool."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

import giantstep
import giantstep.experiment as experiment
from giantstep import data
from giantstep.reproduce import dandi

SMALL = {
    "preset": "dandi",
    "dim": 300,
    "width": 32,
    "target": {"expression": "z1 + z1*z2"},
    "train": {"batch_size": 1200, "steps": 3},
    "readout": {"samples": 1024},
    "test": {"samples": 768},
    "compute": {"block_size": 512},  # several blocks per set: read-ahead meets the prefetch
}


def _numbers(result) -> dict:
    out = result.model_dump(mode="json")
    for key in ("seconds", "peak_memory_bytes", "version"):
        out.pop(key)
    return out


def test_read_ahead_draws_the_sets_it_is_given_and_changes_no_number(monkeypatch):
    taken = []
    take = data._ReadAhead.take

    def counting(self, *args):
        block = take(self, *args)
        taken.append(block is not None)
        return block

    monkeypatch.setattr(data._ReadAhead, "take", counting)
    monkeypatch.setattr(experiment, "draw_threads", lambda: 2)  # as on a machine of 2 cores
    ahead = giantstep.run(SMALL)
    # Batches 1 and 2, the ridge set and the test set were drawn ahead; batch 0 was not.
    assert taken == [False, True, True, True, True]
    monkeypatch.setattr(experiment, "_drawing", lambda config, plan: nullcontext())
    assert _numbers(giantstep.run(SMALL)) == _numbers(ahead)


def test_a_stream_read_out_of_order_draws_its_own_rows():
    a, b, c = (data.SampleStream(0, (0, k), 5) for k in range(3))
    plain = [next(s.blocks(512, 512)).x.copy() for s in (a, b, c)]
    with data.read_ahead([(a, 512, 512), (b, 512, 512), (c, 512, 512)]):
        # c is read before b: the block drawn ahead for b is not c's.
        got = [next(s.blocks(512, 512)).x.copy() for s in (a, c, b)]
    assert all(
        np.array_equal(x, y) for x, y in zip(got, [plain[0], plain[2], plain[1]], strict=True)
    )


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


def test_a_large_run_draws_at_need_and_changes_no_number(monkeypatch):
    large = {
        "dim": 512,  # N·d = 2^18: BLAS on every thread
        "width": 512,
        "train": {"batch_size": 1536},
        "compute": {"block_size": 512},
        "readout": {"samples": 1024, "ridge": [0.01]},
        "test": {"samples": 512},
    }
    started = []
    start = data._BlockFill.start

    def recording(self, threads):
        started.append(threads)
        return start(self, threads)

    monkeypatch.setattr(data._BlockFill, "start", recording)
    at_need = giantstep.run(large)
    # The first block on every core; the next one begun with no thread ahead, then started on
    # every core when it is needed.
    every = data.draw_threads() - 1
    assert started[:3] == [every, 0, every]
    monkeypatch.setattr(experiment, "_drawing", lambda config, plan: nullcontext())
    assert _numbers(giantstep.run(large)) == _numbers(at_need)
    with data.prefetching(0):
        stream = data.SampleStream(3, (0, 0), 7)
        drawn = [b.x.copy() for b in stream.blocks(2048, 512)]
    assert np.array_equal(np.concatenate(drawn), stream.rows(0, 2048).x)
