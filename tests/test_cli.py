"""The command line as a user meets it: real subprocesses, exit codes and messages."""

import json
import math
import subprocess
import sys

import pytest

SMALL = [
    "--set",
    "dim=40",
    "--set",
    "width=30",
    "--set",
    "train.batch_size=600",
    "--set",
    "readout.samples=500",
    "--set",
    "test.samples=300",
]


def giantstep(*args, check=False):
    return subprocess.run(
        [sys.executable, "-m", "giantstep", *args], capture_output=True, text=True, check=check
    )


def test_run_json_has_the_documented_fields(tmp_path):
    out = giantstep(
        "run",
        *SMALL,
        "--set",
        "readout.ridge=[0.001,0.01]",
        "--set",
        "target.expression=z1*z2",
        "--set",
        "train.steps=2",
        "--json",
        "--out",
        str(tmp_path),
        check=True,
    )
    result = json.loads(out.stdout)
    assert out.stderr == ""  # no progress bar with --json
    for key in ("config", "step_size", "errors", "alignment", "seconds", "peak_memory_bytes"):
        assert key in result
    assert result["config"]["target"]["expression"] == "z1*z2"
    assert [e["ridge"] for e in result["errors"]] == [0.001, 0.01]
    assert set(result["errors"][0]) == {"ridge", "train_error", "test_error"}
    assert len(result["alignment"]) == 3 and len(result["alignment"][1]["direction_alignment"]) == 2
    assert json.loads((tmp_path / "result.json").read_text()) == result


def test_run_with_config_file_prints_a_table(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(
        "dim = 40\nwidth = 30\n[train]\nbatch_size = 600\n[readout]\nsamples = 500\n"
        "[test]\nsamples = 300\n"
    )
    out = giantstep("run", str(config), check=True)
    assert "test error" in out.stdout and "update cosine" in out.stdout


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("dim=-3", "dim"),
        ("width=0", "width"),
        ("dim='big'", "dim"),
        ("activation=swish", "activation"),
        ("preset=lecun", "preset"),
        ("target.expression=__import__('os')", "target.expression"),
        ("target.expression=z1+", "target.expression"),
        ("train.step_size.scale=inf", "train.step_size.scale"),
        ("train.step_size.batch_exponent=1e6", "train.step_size"),
        ("train.residual=z", "train.residual"),
        ("readout.ridge=[]", "readout.ridge"),
        ("readout.ridge=[-1.0]", "readout.ridge"),
        ("compute.dtype=float16", "compute.dtype"),
        ("compute.block_size=1000", "compute.block_size"),
        ("data.distribution=cauchy", "data.distribution"),
        ("colour=blue", "colour"),
        ("width=10000000", "width"),
    ],
)
def test_bad_input_names_the_key_and_exits_2(override, key, tmp_path):
    out = giantstep("run", *SMALL, "--set", override, "--out", str(tmp_path / "never"))
    assert out.returncode == 2, out.stderr
    assert f"error: {key}" in out.stderr
    assert not (tmp_path / "never").exists()  # nothing half-written


def test_missing_and_malformed_config_files_exit_2(tmp_path):
    assert giantstep("run", str(tmp_path / "none.toml")).returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("dim = = 3\n")
    out = giantstep("run", str(bad))
    assert out.returncode == 2 and "bad.toml" in out.stderr


def test_diverging_run_exits_2_and_says_where():
    out = giantstep(
        "run",
        *SMALL,
        "--set",
        "activation=poly(0,0,0,1)",
        "--set",
        "train.step_size.scale=1e120",
        "--set",
        "train.steps=3",
    )
    assert out.returncode == 2 and "diverged at step" in out.stderr


def test_theory_hermite():
    out = giantstep("theory", "hermite", "relu", "--max-degree", "6", "--json", check=True)
    mu = json.loads(out.stdout)["coefficients"]
    assert mu[1] == pytest.approx(0.5) and mu[6] == pytest.approx(
        3 / (2 * 3.141592653589793) ** 0.5
    )
    assert giantstep("theory", "hermite", "swish").returncode == 2
    # A polynomial's coefficients are exact at every degree; a smooth σ's, by quadrature, are
    # refused where rounding swamps them (tanh's μ_25 came out as 1e-5 for 0, sin's μ_41 1e7).
    out = giantstep("theory", "hermite", "He128", "--max-degree", "128", "--json", check=True)
    assert json.loads(out.stdout)["coefficients"][128] == float(math.factorial(128))
    out = giantstep("theory", "hermite", "tanh", "--max-degree", "30")
    assert out.returncode == 2 and "--max-degree 30" in out.stderr, out.stderr
    # Rounding bounds above 1e-9 (SCIENCE.md §3 asks μ_k to 1e-8): from k = 17 for tanh.
    assert "lost in rounding from k = 17" in out.stderr and "at most --max-degree 16" in out.stderr
    giantstep("theory", "hermite", "tanh", "--max-degree", "16", check=True)
    phases = giantstep("theory", "phases", "--activation", "He20", "--json", check=True)
    assert not any(b["degrees"] for b in json.loads(phases.stdout)["bands"])  # μ_1..μ_6 = 0


def test_the_command_freezes_its_imported_objects_and_main_does_not():
    """``python -m giantstep`` leaves the objects of its imports out of the garbage collector's
    full collections (gc.freeze: the exit's collections no longer walk them); ``main``, which
    tests and scripts call in their own process, leaves the collector alone."""
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
        "from giantstep.cli import {entry}\n"
        "sys.argv = ['giantstep', '--version']\n"
        "{entry}()\n"
    )
    for entry, frozen in (("command_line", True), ("main", False)):
        out = subprocess.run(
            [sys.executable, "-c", probe.format(entry=entry)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        count = int(out.stdout.split("frozen")[1])
        assert (count > 10_000) == frozen, (entry, count)
