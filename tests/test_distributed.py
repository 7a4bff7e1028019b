"""Dask, for real: a local scheduler and two worker processes started here, shared by the module.

One run spread over the workers equals the local run; a sweep on the cluster stores the same
numbers as in-process and local processes; a worker killed mid-sweep costs nothing.
"""

import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner

import giantstep
from giantstep.cli import main
from giantstep.distributed import _pieces, run_spread, spread_over
from giantstep.store import OK, Store, load
from giantstep.sweep import parse_sweep, run_sweep

distributed = pytest.importorskip("distributed")

TIMING = {"seconds", "peak_memory_bytes", "finished"}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def numbers(path) -> dict:
    frame = load(path, arrays=True)
    frame = frame[frame["status"] == OK].drop(columns=[c for c in TIMING if c in frame])
    out = {}
    for _, row in frame.iterrows():
        out[row["key"]] = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in row.drop(["key", "sweep"]).items()
        }
    return out


SPREAD_CONFIG = {
    "dim": 40,
    "width": 30,
    "activation": "tanh",
    "target": {"expression": "z1 + z1*z2", "noise": 0.1},
    "preset": "dandi",
    "train": {"steps": 2, "batch_size": 2800, "step_size": {"scale": 2.0, "width_exponent": 1}},
    "readout": {"samples": 1500, "ridge": [1e-3, 1e-1]},
    "test": {"samples": 1000},
    "compute": {"block_size": 512},
}


def test_pieces_are_whole_blocks():
    assert _pieces(2800, 512, 2) == [(0, 1024), (1024, 1024), (2048, 752)]
    assert _pieces(2800, 512, 8) == [(0, 2800)]


def test_a_run_spread_over_the_workers_equals_the_local_run(client):
    local = giantstep.run(SPREAD_CONFIG)
    for blocks_per_task in (1, 2):
        spread = run_spread(SPREAD_CONFIG, client, blocks_per_task)
        for a, b in zip(local.errors, spread.errors, strict=True):
            assert b.train_error == pytest.approx(a.train_error, rel=1e-10, abs=1e-12)
            assert b.test_error == pytest.approx(a.test_error, rel=1e-10, abs=1e-12)
        for a, b in zip(local.alignment, spread.alignment, strict=True):
            np.testing.assert_allclose(b.direction_alignment, a.direction_alignment, rtol=1e-10)
            if a.update_cosine is not None:
                assert b.update_cosine == pytest.approx(a.update_cosine, rel=1e-10)
    # The additions follow a fixed tree over the pieces: the same numbers every time, whichever
    # worker finishes first.
    assert timeless(run_spread(SPREAD_CONFIG, client, 1)) == timeless(
        run_spread(SPREAD_CONFIG, client, 1)
    )


def timeless(result):
    return result.model_dump(exclude={"seconds", "peak_memory_bytes"})


def test_spread_is_scoped(client):
    from giantstep.distributed import active_spread

    assert active_spread() is None
    with spread_over(client, 3) as spread:
        assert active_spread() is spread and spread.blocks_per_task == 3
    assert active_spread() is None


SWEEP = {
    "name": "executors",
    "base": {
        "dim": 16,
        "width": 12,
        "train": {"steps": 2, "batch_size": 512, "residual": "y"},
        "readout": {"samples": 512, "ridge": [0.001, 0.1]},
        "test": {"samples": 256},
        "compute": {"block_size": 256},
    },
    "grid": {"seed": [0, 1, 2], "activation": ["relu", "tanh"]},
}


def test_executors_store_identical_numbers(client, tmp_path):
    sweep = parse_sweep(SWEEP)
    stores = {}
    for executor in ("inprocess", "processes", "dask"):
        path = tmp_path / f"{executor}.sqlite"
        with Store(path) as store:
            summary = run_sweep(sweep, store, executor=executor, workers=2, client=client)
        assert (summary.done, summary.failed) == (6, 0)
        stores[executor] = numbers(path)
    assert len(stores["inprocess"]) == 6
    assert stores["processes"] == stores["inprocess"]
    assert stores["dask"] == stores["inprocess"]

    # The command line, given the scheduler's address, skips what is there and adds the rest.
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(
        'name = "executors"\n'
        "[base]\ndim = 16\nwidth = 12\n"
        'train = { steps = 2, batch_size = 512, residual = "y" }\n'
        "readout = { samples = 512, ridge = [0.001, 0.1] }\n"
        "test.samples = 256\ncompute.block_size = 256\n"
        '[grid]\nseed = [0, 1, 2, 3]\nactivation = ["relu", "tanh"]\n'
    )
    out = CliRunner().invoke(
        main,
        [
            "sweep",
            str(sweep_file),
            "--store",
            str(tmp_path / "dask.sqlite"),
            "--scheduler",
            client.scheduler.address,
        ],
    )
    assert out.exit_code == 0, out.output
    assert "8 runs: 2 done, 6 already in" in out.output
    cli = numbers(tmp_path / "dask.sqlite")
    assert len(cli) == 8 and all(cli[k] == v for k, v in stores["inprocess"].items())


def test_a_worker_lost_mid_sweep_costs_nothing(client, tmp_path):
    sweep = parse_sweep(
        {
            **SWEEP,
            "base": {**SWEEP["base"], "train": {"steps": 2, "batch_size": 16384}},
            "grid": {"seed": list(range(8))},
        }
    )
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def kill_after_first(summary, planned, outcome):
        if planned is not None and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    with Store(tmp_path / "r.sqlite") as store:
        summary = run_sweep(sweep, store, executor="dask", client=client, callback=kill_after_first)
        assert killed
        assert (summary.done, summary.failed) == (8, 0)
        assert set(store.status().values()) == {OK} and len(store) == 8
    # The killed worker's run in flight went to a worker again (the scheduler's own record).
    runs = sweep.expand()
    resent = [
        p
        for p in runs
        if sum(t[2] == "processing" for t in client.story(f"giantstep-{p.key}") if len(t) > 2) > 1
    ]
    assert resent
    client.wait_for_workers(2, timeout=30)  # the nanny brings the worker back
    assert victim not in client.run(os.getpid).values()


def test_run_command_spreads_over_a_scheduler(client):
    import json

    args = ["run", "--json", *(f"--set={k}={v}" for k, v in SMALL_RUN.items())]
    local = json.loads(CliRunner().invoke(main, args).output)
    out = CliRunner().invoke(main, [*args, "--scheduler", client.scheduler.address])
    assert out.exit_code == 0, out.output
    spread = json.loads(out.output)
    for a, b in zip(local["errors"], spread["errors"], strict=True):
        assert b["test_error"] == pytest.approx(a["test_error"], rel=1e-10)
    assert spread["alignment"][1]["update_cosine"] == pytest.approx(
        local["alignment"][1]["update_cosine"], rel=1e-10
    )


SMALL_RUN = {
    "dim": 32,
    "width": 24,
    "train.batch_size": 1500,
    "readout.samples": 1000,
    "test.samples": 600,
    "compute.block_size": 256,
}


@pytest.mark.slow
def test_documented_commands_with_dask_scheduler_and_worker_processes(tmp_path):
    """The README's recipe, verbatim: `dask scheduler`, `dask worker`, `giantstep sweep`."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(giantstep.__file__).parents[1])}
    info = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [
        subprocess.Popen(
            [*dask, "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(info)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 30
        while not info.exists() or not info.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address]
                    + ["--nthreads", "1", "--dashboard-address", ":0"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        sweep_file = tmp_path / "sweep.toml"
        sweep_file.write_text(
            "[base]\ndim = 16\nwidth = 12\ntrain.batch_size = 512\nreadout.samples = 512\n"
            "test.samples = 256\ncompute.block_size = 256\n[grid]\nseed = [0, 1, 2, 3]\n"
        )
        store = tmp_path / "r.sqlite"
        out = subprocess.run(
            [sys.executable, "-m", "giantstep", "sweep", str(sweep_file), "--store", str(store)]
            + ["--scheduler", address],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "4 done" in out.stdout
        here = tmp_path / "here.sqlite"
        with Store(here) as local:
            run_sweep(
                parse_sweep(
                    {
                        "base": {
                            "dim": 16,
                            "width": 12,
                            "train": {"batch_size": 512},
                            "readout": {"samples": 512},
                            "test": {"samples": 256},
                            "compute": {"block_size": 256},
                        },
                        "grid": {"seed": [0, 1, 2, 3]},
                    }
                ),
                local,
                executor="inprocess",
            )
        assert numbers(store) == numbers(here)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
