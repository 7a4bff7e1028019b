"""Careless and hostile input at the command line: never a hang, never a traceback.

Each case runs the real command in a subprocess and asserts the exit code, a message naming the
key (or the file), no traceback, and a wall time bound generous enough for a loaded CI machine
(a hang is the failure, not speed).
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

#: Seconds a refused input may take, even on a loaded 2-core machine.
BOUND = 30

SMALL = ["--set", "dim=20", "--set", "width=10", "--set", "train.batch_size=256"]


def giantstep(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "giantstep", *args],
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=cwd,
    )
    assert time.monotonic() - started < BOUND
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    return out


def swept(tmp_path: Path, store: Path, seeds: str = "0") -> None:
    """Make ``store`` with tiny runs (one per seed) by the sweep command."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        "[base]\ndim = 12\nwidth = 8\ntrain.batch_size = 256\nreadout.samples = 256\n"
        f"test.samples = 256\n[grid]\nseed = [{seeds}]\n"
    )
    out = giantstep("sweep", str(sweep), "--store", str(store), "--executor", "inprocess")
    assert out.returncode == 0, out.stderr


def refused(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith("giantstep: error: "), out.stderr
    for word in words:
        assert word in out.stderr, (word, out.stderr)


# -- files that are not config files ------------------------------------------------------------


def test_an_endless_file_is_refused():
    refused(giantstep("run", "/dev/zero"), "/dev/zero", "larger than 1 MiB")


def test_a_binary_file_is_refused(tmp_path):
    binary = tmp_path / "exp.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    refused(giantstep("run", str(binary)), str(binary), "not UTF-8")


def test_a_missing_or_malformed_file_is_refused(tmp_path):
    refused(giantstep("run", str(tmp_path / "absent.toml")), "does not exist")
    bad = tmp_path / "bad.toml"
    bad.write_text("dim = = 3\n")
    refused(giantstep("run", str(bad)), str(bad))


def test_a_folder_is_refused_where_a_file_is_expected(tmp_path):
    out = giantstep("run", str(tmp_path))
    assert out.returncode == 2 and "is a directory" in out.stderr
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'base_file = "{tmp_path}"\n[grid]\nseed = [0]\n')
    refused(giantstep("sweep", str(sweep), "--dry-run"), "is a folder")
    refused(giantstep("sweep", str(tmp_path / "absent.toml")), "does not exist")


def test_a_sweep_base_file_that_is_not_a_name_is_refused(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text("base_file = 3\n[grid]\nseed = [0]\n")
    refused(giantstep("sweep", str(sweep), "--dry-run"), "base_file", "3")


# -- sizes that pass a type check and would explode later ---------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "why"),
    [
        ("train.batch_size=1000000000000", "train.batch_size", "at most 10,000,000,000"),
        ("readout.samples=100000000000", "readout.samples", "days of work"),
        ("train.steps=100000", "train.steps", "at most 1,000"),
        ("target.noise=1e300", "target.noise", "overflows"),
        ("width=100000000", "width", "GiB"),
    ],
)
def test_sizes_are_bounded_before_any_work(override, key, why):
    refused(giantstep("run", *SMALL, "--set", override), key, why)


def test_a_grid_of_millions_of_runs_is_refused_before_it_is_expanded(tmp_path):
    sweep = tmp_path / "sweep.toml"
    values = ", ".join(map(str, range(1000)))
    sweep.write_text(f"[grid]\nseed = [{values}]\n'train.batch_size' = [{values}]\n")
    refused(giantstep("sweep", str(sweep), "--dry-run"), "grid", "1,000,000 runs")


# -- outputs that cannot be written -------------------------------------------------------------


def test_an_unwritable_out_folder_is_refused_before_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    refused(giantstep("run", *SMALL, "--out", str(blocker / "sub")), "--out", "not a folder")


def test_a_figure_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    store = tmp_path / "r.sqlite"
    swept(tmp_path, store, seeds="0, 1")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = giantstep("plot", str(store), "--x", "seed", "--y", "step_size", "--out",
                    str(blocker / "fig.png"))  # fmt: skip
    refused(out, str(blocker))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "r.sqlite", "sweep.toml"]


# -- Ctrl-C -------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["inprocess", "processes"])
def test_ctrl_c_exits_130_quietly_workers_included(tmp_path, executor):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        "[base]\ndim = 200\nwidth = 200\ntrain.batch_size = 40000\n"
        "[grid]\nseed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "giantstep", "sweep", str(sweep), "--store",
         str(tmp_path / "r.sqlite"), "--executor", executor,
         *(["--workers", "2"] if executor == "processes" else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches it and its workers
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    first = process.stderr.readline()  # the first finished run: the sweep is under way
    assert first.startswith("[1/"), first
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=BOUND)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr, stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the workers leave with their parent
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("workers of the interrupted sweep are still running")


# -- trust: py: activations run code --------------------------------------------------------------


def user_module(tmp_path: Path) -> Path:
    """A module whose import leaves a mark (top-level code) and that defines an activation."""
    (tmp_path / "mine.py").write_text(
        "import pathlib, numpy as np\n"
        f"pathlib.Path({str(tmp_path / 'imported')!r}).write_text('yes')\n"
        "def act(x):\n    return np.tanh(x)\n"
    )
    return tmp_path


def test_a_python_activation_needs_the_opt_in_and_dry_run_never_imports_it(tmp_path):
    user_module(tmp_path)
    spec = ["--set", "activation=py:mine:act"]
    out = giantstep("run", *SMALL, *spec, cwd=tmp_path)
    refused(out, "activation", "--allow-python")
    assert not (tmp_path / "imported").exists()
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[base]\nactivation = "py:mine:act"\ndim = 8\n[grid]\nseed = [0, 1]\n')
    listed = giantstep("sweep", str(sweep), "--dry-run", "--allow-python", cwd=tmp_path)
    assert listed.returncode == 0 and "2 runs" in listed.stdout, listed.stderr
    assert not (tmp_path / "imported").exists()  # validated, never imported
    ran = giantstep("run", *SMALL, *spec, "--allow-python", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "imported").exists()


def test_an_unexpected_error_is_one_line_exit_1_and_debug_shows_the_traceback():
    import click
    from click.testing import CliRunner

    from giantstep.cli import Giantstep

    @click.group(cls=Giantstep)
    @click.option("--debug", is_flag=True)
    def group(debug):
        pass

    @group.command()
    def broken():
        raise RuntimeError("an internal inconsistency")

    out = CliRunner().invoke(group, ["broken"])
    assert out.exit_code == 1
    assert "internal error: RuntimeError: an internal inconsistency" in out.output
    assert "--debug" in out.output and "Traceback" not in out.output
    debug = CliRunner().invoke(group, ["--debug", "broken"])
    assert isinstance(debug.exception, RuntimeError)  # the traceback is shown, not hidden


# -- the store ------------------------------------------------------------------------------------


def sweep_file(tmp_path: Path, seeds: int) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(
        "[base]\ndim = 60\nwidth = 40\ntrain.batch_size = 4096\nreadout.samples = 1024\n"
        f"test.samples = 512\n[grid]\nseed = {list(range(seeds))}\n"
    )
    return path


def test_two_sweeps_at_once_on_one_store_run_each_run_exactly_once(tmp_path):
    path, store = sweep_file(tmp_path, 12), tmp_path / "r.sqlite"
    assert giantstep("sweep", str(path), "--store", str(store), "--dry-run").returncode == 0
    command = [sys.executable, "-m", "giantstep", "sweep", str(path), "--store", str(store),
               "--executor", "inprocess"]  # fmt: skip
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=120)[0] for p in both]
    assert all(p.returncode == 0 for p in both), outputs
    done = [int(o.split(" runs: ")[1].split(" done")[0]) for o in outputs]
    assert sum(done) == 12, outputs  # each run ran once, in one sweep or the other
    import sqlite3

    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM runs").fetchone() == (12, 12)
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)


def test_runs_of_another_version_are_not_shown_unless_asked(tmp_path):
    import giantstep as library
    from giantstep.store import Store

    store = tmp_path / "r.sqlite"
    config = {"dim": 12, "width": 8, "train": {"batch_size": 256}, "readout": {"samples": 256},
              "test": {"samples": 256}}  # fmt: skip
    result = library.run(config).model_dump(mode="json")
    with Store(store) as s:
        s.add_result(result)
        s.add_result({**result, "version": "0.0.1"})
    out = giantstep("results", str(store))
    assert out.returncode == 0 and "1 runs" in out.stdout, out.stdout
    assert "left out: runs of other giantstep versions (1 of 0.0.1)" in out.stderr
    every = giantstep("results", str(store), "--all-versions")
    assert "2 runs" in every.stdout and "0.0.1" in every.stdout


def test_non_finite_labels_are_named_and_a_rerun_skips_them(tmp_path):
    out = giantstep("run", *SMALL, "--set", "target.expression=1/(relu(z1)-relu(z1))")
    refused(out, "target.expression", "not finite", "not a diverging step")
    path = tmp_path / "sweep.toml"
    path.write_text(
        '[base]\ndim = 8\nwidth = 4\ntarget.expression = "exp(exp(exp(z1)))"\n'
        "train.batch_size = 256\n[grid]\nseed = [0]\n"
    )
    store = tmp_path / "r.sqlite"
    first = giantstep("sweep", str(path), "--store", str(store), "--executor", "inprocess")
    assert "1 failed" in first.stdout, first.stdout
    again = giantstep("sweep", str(path), "--store", str(store), "--executor", "inprocess")
    assert "1 already in" in again.stdout, again.stdout  # deterministic: not retried


def test_a_non_finite_activation_is_named_apart_from_a_diverging_step():
    huge = "poly(" + ", ".join(["0"] * 40 + ["1e300"]) + ")"
    out = giantstep("run", *SMALL, "--set", f"activation={huge}")
    refused(out, "activation poly(", "not a diverging step")
    assert "RuntimeWarning" not in out.stderr
    diverged = giantstep("run", *SMALL, "--set", "train.step_size.scale=1e200")
    refused(diverged, "diverged at step 1", "lower train.step_size.scale")


# -- bench: options checked first, a failing workload reported (never waited for) ---------------


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--seeds", "0"], ["--seeds", "takes 1 to 1000 seeds, got 0"]),
        (["--seeds", "-1"], ["--seeds", "got -1"]),
        (["--seeds", "100000000"], ["--seeds", "takes 1 to 1000 seeds, got 100000000"]),
        (["--activation", "nope"], ["--activation", "unknown activation 'nope'"]),
        (["--activation", "py:os:getcwd"], ["--activation py:os:getcwd", "built-in"]),
    ],
)
def test_bench_refuses_bad_seeds_and_activations_before_any_work(option, words):
    out = giantstep("bench", "--quick", "--dtype", "float64", *option)
    refused(out, *words)
    assert "machine:" not in out.stdout  # nothing measured


def test_a_bench_workload_whose_process_dies_is_reported_not_waited_for():
    process = subprocess.Popen(
        [sys.executable, "-m", "giantstep", "bench", "--quick", "--dtype", "float64",
         "--activation", "relu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + BOUND
        workload = None
        while workload is None and time.monotonic() < deadline:
            children = psutil.Process(process.pid).children()
            workload = next((c for c in children if "spawn_main" in " ".join(c.cmdline())), None)
            time.sleep(0.05)
        assert workload is not None, "the bench never started its workload's process"
        workload.kill()
        stdout, stderr = process.communicate(timeout=BOUND)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert "giantstep: error: bench reference relu float64: its process was killed by signal 9" in (
        stderr
    ), stderr


@pytest.mark.slow  # the workload's process measures the machine first: ~5 s
def test_an_activation_not_finite_in_a_bench_workload_is_named_with_exit_2():
    out = giantstep("bench", "--quick", "--dtype", "float32", "--activation", "leaky_relu(1e308)")
    refused(out, "bench reference leaky_relu(1e308) float32", "activation", "not finite")
    assert "RuntimeWarning" not in out.stderr


# -- --out: only a regular file is replaced -------------------------------------------------------


def small_store(tmp_path: Path) -> Path:
    import giantstep as library
    from giantstep.store import Store

    store = tmp_path / "r.sqlite"
    config = {"dim": 12, "width": 8, "train": {"batch_size": 256}, "readout": {"samples": 256},
              "test": {"samples": 256}, "theory": {"errors": False}}  # fmt: skip
    with Store(store) as s:
        s.add_result(library.run(config).model_dump(mode="json"))
    return store


def test_an_out_path_that_is_a_fifo_is_refused_and_left_alone(tmp_path):
    import stat

    store = small_store(tmp_path)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    refused(giantstep("plot", str(store), "--x", "seed", "--y", "step_size", "--out", str(fifo)),
            f"--out {fifo}", "FIFO", "not replaced")  # fmt: skip
    refused(giantstep("results", str(store), "--export", "csv", "--out", str(fifo)),
            f"--out {fifo}", "FIFO")  # fmt: skip
    folder = tmp_path / "out"
    folder.mkdir()
    os.mkfifo(folder / "result.json")
    refused(giantstep("run", *SMALL, "--out", str(folder)), f"--out {folder}", "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert stat.S_ISFIFO(os.lstat(folder / "result.json").st_mode)


def test_an_out_symlink_is_written_through_and_a_file_as_folder_is_named(tmp_path):
    store = small_store(tmp_path)
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_text("old")
    link.symlink_to(real)
    out = giantstep("results", str(store), "--export", "csv", "--out", str(link))
    assert out.returncode == 0, out.stderr
    assert link.is_symlink() and real.read_text().startswith("key,")  # the link kept
    fifo, to_fifo = tmp_path / "fifo.csv", tmp_path / "to-fifo.csv"
    os.mkfifo(fifo)
    to_fifo.symlink_to(fifo)
    refused(giantstep("results", str(store), "--export", "csv", "--out", str(to_fifo)),
            f"--out {to_fifo}", "FIFO")  # fmt: skip
    inside = store / "x.png"
    out = giantstep("plot", str(store), "--x", "seed", "--y", "step_size", "--out", str(inside))
    refused(out, f"--out {inside}", f"{store} is not a folder")
    assert ".x.png." not in out.stderr  # never the temporary file's name
    dangling = tmp_path / "dangling.csv"  # into a folder that is not there: said before work
    dangling.symlink_to(tmp_path / "no-folder" / "out.csv")
    refused(giantstep("results", str(store), "--export", "csv", "--out", str(dangling)),
            f"--out {dangling}", "whose folder does not exist")  # fmt: skip


# -- sweep: --connect-timeout and --workers ------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e308"])
def test_a_connect_timeout_must_be_positive_and_at_most_a_day(tmp_path, value):
    path = sweep_file(tmp_path, 1)
    out = giantstep("sweep", str(path), "--dry-run", "--connect-timeout", value)
    refused(out, "--connect-timeout", "above 0 and at most 86400 (a day)")


@pytest.mark.parametrize("command", ["sweep", "study"])
def test_workers_beyond_any_machine_are_refused_by_the_option(tmp_path, command):
    """2^31 workers overflowed the pool's semaphore (exit 1, after validating everything)."""
    target = str(sweep_file(tmp_path, 1)) if command == "sweep" else "label-noise"
    out = giantstep(command, target, "--workers", "2147483648")
    assert out.returncode == 2 and "'--workers'" in out.stderr and "1<=x<=4096" in out.stderr


def test_workers_that_cannot_fit_in_memory_are_refused_before_any_run(tmp_path):
    # Runs whose Gram matrices (4 × 8 N² bytes) take 60 % of the available memory: one fits,
    # two side by side do not.
    width = int(math.sqrt(0.6 * psutil.virtual_memory().available / 32))
    path = tmp_path / "sweep.toml"
    path.write_text(
        f"[base]\ndim = 12\nwidth = {width}\ntrain.batch_size = 256\ntheory.errors = false\n"
        "[grid]\nseed = [0, 1, 2]\n"
    )
    store = tmp_path / "r.sqlite"
    out = giantstep("sweep", str(path), "--store", str(store), "--workers", "2")
    refused(out, "--workers 2", "2 worker processes", "available memory", "at most 1 fit")
    assert not store.exists()  # refused before the store or any worker


def test_an_error_line_cuts_an_overlong_word_it_quotes():
    """A 100 KB --set key was echoed in full (a 60 KB target expression, by a sweep)."""
    out = giantstep("run", "--set", "a" * 100_000 + "=1")
    refused(out, "unknown key", "…[99841 characters]…")
    assert len(out.stderr) < 500


def test_a_sweeps_workers_keep_numpys_overflow_warnings_to_themselves(tmp_path):
    """The command hides numpy's RuntimeWarnings (its own checks name the cause); its worker
    processes printed them."""
    path = tmp_path / "sweep.toml"
    path.write_text(
        "[base]\ndim = 12\nwidth = 10\ntrain.batch_size = 256\nreadout.samples = 256\n"
        'test.samples = 256\ntheory.errors = false\n[grid]\n"train.step_size.scale" = [1e300]\n'
    )
    out = giantstep("sweep", str(path), "--store", str(tmp_path / "r.sqlite"), "--workers", "1")
    assert out.returncode == 0 and "diverged" in out.stderr, out.stderr
    assert "RuntimeWarning" not in out.stderr, out.stderr


def test_one_worker_always_fits_and_the_default_is_lowered_to_what_fits():
    """A run that fits on its own may always run in one process (--workers 1 was refused when
    the run and an interpreter exceeded the memory); without --workers, one per core is
    lowered to what fits instead of starting them all."""
    from giantstep.cli import _workers_that_fit
    from giantstep.config import validate_config
    from giantstep.executors import cores

    width = int(math.sqrt(0.9 * psutil.virtual_memory().available / 32))  # ~90 % each
    config = validate_config({"dim": 12, "width": width, "theory": {"errors": False}})
    assert _workers_that_fit(1, [config] * 3) == 1
    assert _workers_that_fit(None, [config] * 3) == (1 if cores() > 1 else None)
    small = validate_config({"dim": 12, "width": 10})
    assert _workers_that_fit(None, [small] * 3) is None  # the default, one per core


def test_ctrl_c_stops_a_bench_and_its_workload_quietly():
    """The workload's process sent its KeyboardInterrupt up a closed pipe: a traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "giantstep", "bench", "--quick", "--dtype", "float64",
         "--activation", "relu", "--seeds", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C finds it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline, workload = time.monotonic() + BOUND, None
        while workload is None and time.monotonic() < deadline:
            children = psutil.Process(process.pid).children()
            workload = next((c for c in children if "spawn_main" in " ".join(c.cmdline())), None)
            time.sleep(0.05)
        assert workload is not None, "the bench never started its workload's process"
        time.sleep(1.0)  # inside the workload (the machine's rates, then the run)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=BOUND)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr and "Warning" not in stderr, stderr
    assert not workload.is_running() or workload.status() == psutil.STATUS_ZOMBIE


def test_a_fifo_given_as_an_input_is_refused_when_nobody_writes_to_it(tmp_path, monkeypatch):
    """A named pipe as a config or sweep file waited for a writer for ever, and as a store
    too; bash's ``<(...)``, a pipe written to at once, still works. The command runs in this
    process here, with a shorter wait than its 10 s (``files.PIPE_WAIT``)."""
    from click.testing import CliRunner

    from giantstep import files
    from giantstep.cli import main

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    monkeypatch.setattr(files, "PIPE_WAIT", 0.5)
    started = time.monotonic()
    out = CliRunner().invoke(main, ["run", str(fifo)])
    assert time.monotonic() - started < 30
    assert out.exit_code == 2, out.output
    for words in (f"config file {fifo} is a FIFO", "nothing was written"):
        assert words in out.output, out.output
    refused(giantstep("results", str(fifo)), f"{fifo}: is a FIFO (named pipe), not a giantstep")
    written = subprocess.run(
        ["bash", "-c", f'{sys.executable} -m giantstep run <(printf "dim = 12\\nwidth = 8\\n'
         '[train]\\nbatch_size = 256\\n[readout]\\nsamples = 256\\n[test]\\nsamples = 256\\n'
         '[theory]\\nerrors = false\\n") --json'],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert '"dim": 12' in written.stdout


def test_a_5000_digit_integer_and_too_many_learnable_steps_name_their_key(tmp_path):
    """Python's limit on integer digits surfaced as a message naming nothing; -T 20000 was
    blamed on the expression."""
    huge = "9" * 5000
    refused(giantstep("run", "--set", f"dim={huge}"), "dim: Exceeds the limit (4300 digits)")
    path = tmp_path / "big.toml"
    path.write_text(f"dim = {huge}\n")
    refused(giantstep("run", str(path)), f"config file {path}: Exceeds the limit")
    out = giantstep("theory", "learnable", "z1", "-k", "1", "-T", "20000")
    assert out.returncode == 2 and "'--steps' / '-T'" in out.stderr and "0<=x<=10000" in out.stderr


def test_reproduce_refuses_an_out_that_is_not_a_folder_before_its_runs():
    started = time.monotonic()
    refused(giantstep("reproduce", "dandi-batch", "--quick", "--out", "/dev/null"),
            "--out /dev/null", "is not a folder")  # fmt: skip
    assert time.monotonic() - started < 30  # before the runs, which take longer


def test_a_failure_before_any_step_is_not_blamed_on_the_step_size():
    """With train.steps = 0 the message said "diverged at step 0 ... lower
    train.step_size.scale", though no step was taken: the labels overflow here."""
    overrides = ["dim=20", "width=10", "train.steps=0", "target.expression=z1*1e200"]
    out = giantstep("run", *[a for o in overrides for a in ("--set", o)])
    refused(out, "not finite at initialisation, before any step", "target.expression")
    assert "step_size" not in out.stderr


def test_empty_and_quoted_dotted_keys_are_named_as_written(tmp_path):
    """`--set .dim=3` and a key "" said 'config: unknown key', naming nothing; a quoted
    "train.batch_size" read as if a documented key were unknown."""
    refused(giantstep("run", "--set", ".dim=3"), "--set '.dim=3'", "has an empty part")
    empty, dotted = tmp_path / "empty.toml", tmp_path / "dotted.toml"
    empty.write_text('"" = 3\n')
    dotted.write_text('"train.batch_size" = 512\n')
    refused(giantstep("run", str(empty)), '"": unknown key')
    refused(giantstep("run", str(dotted)), '"train.batch_size": unknown key', "unquoted")


def test_an_out_folder_that_is_a_dangling_link_is_refused_before_the_run(tmp_path):
    """run --out LINK, LINK pointing nowhere, ran the experiment and then said 'File exists'."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere" / "x")
    refused(giantstep("run", "--set", "dim=12", "--set", "width=8", "--out", str(link)),
            f"--out {link}", "symbolic link", "does not exist")  # fmt: skip


def test_theory_errors_takes_one_over_curve():
    """Two --over options: the last one won, silently."""
    out = giantstep("theory", "errors", "--over", "readout.samples=100:1000:3",
                    "--over", "train.batch_size=100:1000:3")  # fmt: skip
    refused(out, "--over: one curve at a time, got 2")


def test_a_study_on_worker_processes_finds_what_it_finds_in_one(tmp_path):
    """study --workers K goes through the sweep's memory check (it had none) and its pool;
    its findings are those of the study run in one process."""
    reports = []
    for workers in ("1", "2"):
        out = giantstep("study", "label-noise", "--quick", "--out", str(tmp_path / workers),
                        "--workers", workers, "--json")  # fmt: skip
        assert out.returncode == 0, out.stderr
        reports.append(json.loads(out.stdout)["findings"])
    assert reports[0] == reports[1]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_out_in_a_folder_that_takes_no_files_is_refused_before_the_work(tmp_path):
    """plot --out /proc/x.png failed only when writing, without naming --out, and reproduce
    --out /proc/x after its runs: /proc is a folder, and root may write into it as far as
    access() tells, yet no file can be made there."""
    refused(giantstep("plot", str(tmp_path / "r.sqlite"), "--x", "seed", "--y", "step_size",
                      "--out", "/proc/x.png"),
            "--out /proc/x.png", "cannot write into /proc")  # fmt: skip
    started = time.monotonic()
    refused(giantstep("reproduce", "dandi-batch", "--quick", "--out", "/proc/x"),
            "--out /proc/x", "cannot write into /proc")  # fmt: skip
    assert time.monotonic() - started < 30  # before the runs


def test_brackets_in_paths_and_repeated_columns(tmp_path):
    """A store under 'd[/b]' raised rich's MarkupError (exit 1); --columns seed,seed crashed
    the export; an array column named in a listing was 'no column'; an empty store with a
    filter said 'no column seed'."""
    folder = tmp_path / "d[/b]"  # two folders, and a closing tag to rich
    folder.mkdir(parents=True)
    store = folder / "x.sqlite"
    swept(tmp_path, store)
    listing = giantstep("results", str(store))
    assert listing.returncode == 0 and "d[/b]" in listing.stdout
    csv = tmp_path / "x.csv"
    out = giantstep("results", str(store), "--export", "csv", "--out", str(csv),
                    "--columns", "seed,seed")  # fmt: skip
    assert out.returncode == 0 and csv.read_text().splitlines()[0] == "seed"
    refused(giantstep("results", str(store), "--columns", "alignment.1.direction_alignment"),
            "holds arrays", "--export")  # fmt: skip


def test_plot_messages_name_the_filter_and_the_categorical_axis_and_long_names_fit(tmp_path):
    """A filter matching nothing said 'the store has no runs to plot'; --logx on an activation
    axis counted its runs as '≤ 0'; a store named near the 255-byte limit failed with 'File
    name too long', its temporary name being longer."""
    store = tmp_path / ("a" * 243 + ".sqlite")  # 250 bytes: a legal name
    swept(tmp_path, store)
    figure = str(tmp_path / "f.png")
    refused(giantstep("plot", str(store), "--x", "seed", "--y", "step_size", "seed=6",
                      "--out", figure), "seed=6: no run of", "matches")  # fmt: skip
    out = giantstep("plot", str(store), "--x", "activation", "--y", "step_size", "--logx",
                    "--out", figure)  # fmt: skip
    refused(out, "--logx: activation takes values that are not numbers")


def test_workers_with_an_executor_that_has_no_local_processes_is_refused(tmp_path):
    """--executor inprocess --workers 3 ignored --workers silently."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text("[base]\ndim = 12\nwidth = 8\n[grid]\nseed = [0]\n")
    out = giantstep("sweep", str(sweep), "--executor", "inprocess", "--workers", "3",
                    "--store", str(tmp_path / "r.sqlite"))  # fmt: skip
    refused(out, "--workers: sets the local processes; --executor inprocess")
    assert not (tmp_path / "r.sqlite").exists()
    # --store DIR/x/ made a file DIR/x: the slash, which names a folder, was dropped.
    out = giantstep("sweep", str(sweep), "--store", f"{tmp_path}/x/", "--executor", "inprocess")
    refused(out, "--store", "ends in '/', a folder")
    assert not (tmp_path / "x").exists()
