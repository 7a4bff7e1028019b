"""Dask, for real: local clusters of one and two worker processes started here.

Every streamed sum (gradient, Gram statistics, spectrum sums, ζ, left vectors) computed here,
spread over one worker and over two, and densely, agrees: local = spread to 1e-12, one worker =
two workers bit for bit (the summation tree depends only on the pieces). A run spread over the
workers sends every streamed sum there; a sweep on the cluster stores the same numbers as
in-process and local processes; a worker killed mid-sweep costs nothing.
"""

import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner

import giantstep
from giantstep.activations import get_activation
from giantstep.cli import main
from giantstep.data import CHUNK_ROWS, RIDGE, TRAIN, SampleStream
from giantstep.executors import local_processes
from giantstep.model import initialize
from giantstep.readout import feature_statistics
from giantstep.reduction import BLOCKS_PER_TASK, pieces, reduce_blocks
from giantstep.spectrum import Probes, feature_sums, first_batch_zeta, left_vectors, top_spectrum
from giantstep.store import OK, Store, load
from giantstep.sweep import parse_sweep, run_sweep
from giantstep.targets import Teacher
from giantstep.theory.bands import update_triplet
from giantstep.train import gradient

distributed = pytest.importorskip("distributed")

TIMING = {"seconds", "peak_memory_bytes", "finished"}


def start_client(workers: int):
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def client():
    cluster, c = start_client(2)
    with c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def single():
    """A cluster of one worker, to compare with two."""
    cluster, c = start_client(1)
    with c:
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


# Enough blocks of 256 rows for several pieces of BLOCKS_PER_TASK blocks in every sum.
SPREAD_CONFIG = {
    "dim": 40,
    "width": 30,
    "activation": "tanh",
    "target": {"expression": "z1 + z1*z2", "noise": 0.1},
    "preset": "dandi",
    "train": {"steps": 2, "batch_size": 5000, "step_size": {"scale": 2.0, "width_exponent": 1}},
    "readout": {"samples": 4700, "ridge": [1e-3, 1e-1]},
    "test": {"samples": 2600},
    "compute": {"block_size": 256},
}
ROWS = 3 * BLOCKS_PER_TASK * CHUNK_ROWS + 100  # four pieces, the last one short


def test_pieces_are_whole_blocks():
    assert pieces(2800, 512, 2) == [(0, 1024), (1024, 1024), (2048, 752)]
    assert pieces(2800, 512, 8) == [(0, 2800)]


def kernel_setup():
    act = get_activation("softplus")
    initial = initialize(4, 19, 30, activation=act, preset="moniri")
    teacher = Teacher.draw(4, "z1 + He2(z1)/2", 30, noise=0.2)
    batch = SampleStream(4, (TRAIN, 0), 30)
    grad = gradient(initial, teacher, batch, n_samples=600, block_size=CHUNK_ROWS, residual="y")
    network = initial.with_first_layer(initial.first_layer - 6.0 * grad)
    return initial, network, teacher


def streamed_sums(initial, network, teacher, executor):
    """Every streamed kernel of the package on the same rows, with the given executor."""
    stream = SampleStream(5, (RIDGE, 0), 30)
    rows = {"n_samples": ROWS, "block_size": CHUNK_ROWS, "executor": executor}
    zeta = first_batch_zeta(teacher, stream, **rows)
    probes = Probes(teacher.directions[0], zeta, initial.first_layer.T @ initial.second_layer, 2)
    triplet = update_triplet(network.first_layer - initial.first_layer)
    mu = network.activation.hermite_coefficients(2)
    sums = feature_sums(
        network, initial, teacher, stream, probes=probes, triplet=triplet, mu=mu,
        residual_grams=True, **rows,
    )  # fmt: skip
    spectrum = top_spectrum(sums.gram, sums.probe_cross, sums.probe_gram, sums.count, 4)
    return {
        "gradient": gradient(network, teacher, stream, residual="y-f", **rows),
        "gram": feature_statistics(network, teacher, stream, **rows),
        "zeta": zeta,
        "spectrum": sums,
        "left vectors": left_vectors(network, stream, spectrum=spectrum, count=sums.count, **rows),
        "_top": spectrum,
    }


def arrays_of(value) -> dict[str, np.ndarray]:
    """The arrays (and scalars) of a sum, by name."""
    if isinstance(value, np.ndarray):
        return {"": value}
    return {k: np.asarray(v) for k, v in vars(value).items() if v is not None}


def test_every_streamed_sum_local_spread_and_dense_agree(client, single):
    initial, network, teacher = kernel_setup()
    local = streamed_sums(initial, network, teacher, None)
    two = streamed_sums(initial, network, teacher, client)
    one = streamed_sums(initial, network, teacher, single)
    for name in ("gradient", "gram", "zeta", "spectrum", "left vectors"):
        for field, value in arrays_of(local[name]).items():
            np.testing.assert_allclose(
                arrays_of(two[name])[field], value, rtol=1e-12, atol=1e-12, err_msg=name + field
            )
            # The same tree of additions on one worker as on two: the same bits.
            np.testing.assert_array_equal(
                arrays_of(one[name])[field], arrays_of(two[name])[field], err_msg=name + field
            )
    # Dense references on the whole set of rows.
    block = SampleStream(5, (RIDGE, 0), 30).rows(0, ROWS)
    x = block.x.copy()
    _, y = teacher.labels(block)
    f = network.features(x)
    np.testing.assert_allclose(local["gram"].gram, f.T @ f, rtol=1e-10)
    np.testing.assert_allclose(local["zeta"], x.T @ y / ROWS, rtol=1e-10)
    np.testing.assert_allclose(local["spectrum"].gram0, initial.features(x).T @ initial.features(x),
                               rtol=1e-10)  # fmt: skip
    s, a = network.output_scale, network.second_layer
    value, slope = network.activation.value_and_derivative(x @ network.first_layer.T)
    r = y - s * value @ a
    dense = -(s / ROWS) * (slope * np.outer(r, a)).T @ x
    np.testing.assert_allclose(local["gradient"], dense, rtol=1e-10, atol=1e-13)
    u = f @ local["_top"].right / (local["_top"].values * np.sqrt(ROWS))
    np.testing.assert_allclose(local["left vectors"], u, rtol=1e-10, atol=1e-12)


class RecordingClient:
    """A Dask client that records what each streamed sum it is sent is (its ``name``)."""

    def __init__(self, client):
        self.client = client
        self.sums: list[str] = []

    def scatter(self, data, **kwargs):
        self.sums.append(data.name)
        return self.client.scatter(data, **kwargs)

    def submit(self, *args, **kwargs):
        return self.client.submit(*args, **kwargs)

    def gather(self, *args, **kwargs):
        return self.client.gather(*args, **kwargs)


def test_a_spread_run_sends_every_streamed_sum_to_the_workers(client):
    config = {**SPREAD_CONFIG, "train": {**SPREAD_CONFIG["train"], "steps": 1},
              "spectrum": {"enabled": True, "top": 5, "max_degree": 2}}  # fmt: skip
    recording = RecordingClient(client)
    spread = giantstep.run(config, executor=recording)
    assert recording.sums == ["gradient", "zeta", "spectrum", "spectrum"]
    local = giantstep.run(config)
    for a, b in zip(local.errors, spread.errors, strict=True):
        assert b.test_error == pytest.approx(a.test_error, rel=1e-10)
    assert spread.spectrum.singular_values == pytest.approx(
        local.spectrum.singular_values, rel=1e-10
    )
    plain = RecordingClient(client)
    giantstep.run(SPREAD_CONFIG, executor=plain)
    assert plain.sums == ["gradient", "gradient", "gram", "gram"]


def test_a_run_spread_over_the_workers_equals_the_local_run(client, single):
    local = giantstep.run(SPREAD_CONFIG)
    spread = giantstep.run(SPREAD_CONFIG, executor=client)
    for a, b in zip(local.errors, spread.errors, strict=True):
        assert b.train_error == pytest.approx(a.train_error, rel=1e-10, abs=1e-12)
        assert b.test_error == pytest.approx(a.test_error, rel=1e-10, abs=1e-12)
    for a, b in zip(local.alignment, spread.alignment, strict=True):
        np.testing.assert_allclose(b.direction_alignment, a.direction_alignment, rtol=1e-10)
        if a.update_cosine is not None:
            assert b.update_cosine == pytest.approx(a.update_cosine, rel=1e-10)
    # The additions follow a fixed tree over the pieces: the same numbers on one worker as on
    # two, whichever finishes first.
    assert timeless(giantstep.run(SPREAD_CONFIG, executor=single)) == timeless(spread)


def timeless(result):
    return result.model_dump(exclude={"seconds", "peak_memory_bytes"})


def test_an_executor_that_is_not_one_is_named():
    with pytest.raises(ValueError, match="executor"):
        giantstep.run(SPREAD_CONFIG, executor="dask")
    with pytest.raises(ValueError, match="executor"):
        reduce_blocks(None, SampleStream(0, (0,), 3), 10, 256, executor=4)


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
    with local_processes(2) as pool:
        for name, executor in (("inprocess", None), ("processes", pool), ("dask", client)):
            path = tmp_path / f"{name}.sqlite"
            with Store(path) as store:
                summary = run_sweep(sweep, store, executor=executor)
            assert (summary.done, summary.failed) == (6, 0)
            stores[name] = numbers(path)
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
        summary = run_sweep(sweep, store, executor=client, callback=kill_after_first)
        assert killed
        assert (summary.done, summary.failed) == (8, 0), [r.error for r in store.runs() if r.error]
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
            )
        assert numbers(store) == numbers(here)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
