"""Sweeps: parsing and validation, skipping, failures, and a sweep killed with SIGKILL."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

import giantstep
from giantstep.cli import main
from giantstep.config import ConfigError
from giantstep.store import DIVERGED, FAILED, OK, Store, load
from giantstep.sweep import load_sweep, parse_sweep, run_sweep

BASE = textwrap.dedent(
    """
    [base]
    dim = 12
    width = 10
    train = { steps = 2, batch_size = 256, residual = "y" }
    readout = { samples = 256, ridge = [0.001, 0.1] }
    test.samples = 256
    compute.block_size = 256
    """
)

#: Columns that measure the machine, not the experiment.
TIMING = {"seconds", "peak_memory_bytes", "finished"}


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def numbers(path) -> dict:
    """``{key: {column: value}}`` of the ok runs, without timings: what must be reproducible."""
    frame = load(path, arrays=False)
    frame = frame[frame["status"] == OK].drop(columns=[c for c in TIMING if c in frame])
    return {row["key"]: row.drop("key").to_dict() for _, row in frame.iterrows()}


def giantstep_env() -> dict:
    """Environment for a subprocess that imports this very copy of giantstep."""
    src = str(Path(giantstep.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


# -- the sweep file ---------------------------------------------------------------------------


def test_grid_and_zip_expand_in_order(tmp_path):
    path = write(
        tmp_path,
        """
        name = "demo"
        """
        + BASE
        + """
        [grid]
        seed = [0, 1]
        train.batch_size = [256, 512]     # unquoted dotted key: a nested table in TOML
        [[zip]]
        "activation" = ["relu", "tanh", "erf"]
        "train.step_size.scale" = [1.0, 0.5, 2.0]
        """,
    )
    sweep = load_sweep(path)
    runs = sweep.expand()
    assert sweep.name == "demo" and len(runs) == 2 * 2 * 3
    assert runs[0].values == {
        "seed": 0,
        "train.batch_size": 256,
        "activation": "relu",
        "train.step_size.scale": 1.0,
    }
    assert runs[1].values["activation"] == "tanh" and runs[1].values["train.step_size.scale"] == 0.5
    assert runs[-1].config.seed == 1 and runs[-1].config.train.batch_size == 512
    assert runs[-1].config.activation == "erf" and runs[-1].config.dim == 12  # from [base]
    assert len({r.key for r in runs}) == 12


def test_base_file_and_duplicates(tmp_path):
    write(tmp_path, "dim = 12\nwidth = 10\n[test]\nsamples = 256\n", "base.toml")
    path = write(
        tmp_path,
        """
        base_file = "base.toml"
        [base]
        compute.block_size = 256
        [grid]
        seed = [0, 0, 1]
        """,
    )
    runs = load_sweep(path).expand()
    assert len(runs) == 2  # the same experiment twice is one run
    assert runs[0].config.dim == 12 and runs[0].config.compute.block_size == 256


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[grid]\ntrain.batch_sizee = [1, 2]", "train.batch_sizee"),
        ("[grid]\nnosuch = [1]", "nosuch"),
        ("[grid]\nseed = []", "grid.seed"),
        ("[grid]\nseed = 3", "grid.seed"),
        ("[grid]\n", "grid"),
        ("name = 'x'", "grid"),
        ("[grdi]\nseed = [1]", "grdi"),
        ("[grid]\ntrain.batch_size = [256, -4]", "train.batch_size"),
        ("[grid]\ndim = ['many']", "dim"),
        ("[grid]\nseed = [1]\n[[zip]]\nseed = [1, 2]", "zip[0].seed"),
        ("[[zip]]\ndim = [1, 2]\nwidth = [3]", "zip[0]"),
        ("[grid]\nseed = [1\n", "sweep.toml"),
        ("base_file = 'absent.toml'\n[grid]\nseed = [1]", "absent.toml"),
        # A quoted dotted key in [base] is refused, as in a config file (TOML keeps it apart
        # from the dotted key, and one of the two values would be dropped).
        ("[grid]\nseed = [1]\n[base.model]\n'output_scale.x' = 2", 'base: "output_scale.x"'),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path, text, named):
    path = write(tmp_path, text + "\n" + BASE)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace(".", r"\.")):
        load_sweep(path).expand()


def test_bad_sweep_file_exits_2_before_any_run(tmp_path):
    store = tmp_path / "r.sqlite"
    for text, named in [
        ("[grid]\ntrain.batch_sizee = [256]", "train.batch_sizee"),
        ("[grid]\nseed = [0, 1]\ntrain.batch_size = [256, 0]", "train.batch_size"),
        ("[grid\n", "sweep.toml"),
    ]:
        path = write(tmp_path, BASE + text)
        out = CliRunner().invoke(main, ["sweep", str(path), "--store", str(store)])
        assert out.exit_code == 2, out.output
        assert named in out.output
        assert not store.exists() or len(Store(store)) == 0  # nothing ran
    path = write(tmp_path, BASE + "[grid]\nseed = [0]")
    out = CliRunner().invoke(
        main,
        ["sweep", str(path), "--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "0.5"],
    )
    assert out.exit_code == 2 and "tcp://127.0.0.1:1" in out.output


def test_parse_rejects_a_key_varied_twice():
    with pytest.raises(ConfigError, match="already varied"):
        parse_sweep({"grid": {"seed": [0]}, "zip": {"seed": [1]}})


# -- running ----------------------------------------------------------------------------------


# Weights of 1e200 after step 1 overflow numpy's row norms (a warning) before step 2 diverges.
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_divergence_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = parse_sweep(
        {
            "base": {**_base(), "train": {"steps": 2, "batch_size": 256}},
            "grid": {"train": {"step_size": {"scale": [1.0, 1e200]}}, "seed": [0, 1]},
        }
    )
    with Store(tmp_path / "r.sqlite") as store:
        summary = run_sweep(sweep, store)
        assert (summary.done, summary.failed, summary.skipped) == (2, 2, 0)
        statuses = sorted(store.status().values())
        assert statuses == [DIVERGED, DIVERGED, OK, OK]
        # Rerun: diverged runs are final (skipped); --retry reruns them.
        assert run_sweep(sweep, store).skipped == 4
        again = run_sweep(sweep, store, retry=True)
        assert (again.skipped, again.failed) == (2, 2)
    frame = load(tmp_path / "r.sqlite")
    diverged = frame[frame["status"] == DIVERGED]
    assert diverged["error"].str.contains("diverged at step").all()
    assert (diverged["train.step_size.scale"] == 1e200).all()


def test_failed_runs_are_retried(tmp_path):
    sweep = parse_sweep({"base": _base(), "grid": {"seed": [0, 1]}})
    runs = sweep.expand()
    with Store(tmp_path / "r.sqlite") as store:
        store.add_failure(runs[0].config, "worker lost")
        summary = run_sweep(sweep, store)
        assert (summary.done, summary.skipped) == (2, 0)
        assert set(store.status().values()) == {OK}
        assert FAILED not in store.status().values()


def _base() -> dict:
    return {
        "dim": 12,
        "width": 10,
        "train": {"steps": 2, "batch_size": 256, "residual": "y"},
        "readout": {"samples": 256, "ridge": [0.001, 0.1]},
        "test": {"samples": 256},
        "compute": {"block_size": 256},
    }


@pytest.mark.parametrize("other", ["dies", "runs on", "finishes later"])
def test_runs_another_sweep_holds_are_looked_at_again_at_the_end(tmp_path, other):
    """A sweep skipped the runs another sweep on its store had claimed and called them
    'already in'; when that sweep died, they were never run, and a study sharing the store
    failed with a KeyError. Now they are looked at again once this sweep's own are done."""
    import threading

    runs = parse_sweep({"base": _base(), "grid": {"seed": [0, 1, 2]}}).expand()
    with Store(tmp_path / "r.sqlite") as store:
        assert store.claim(runs[1].key, owner="other sweep")  # live: this very process
        if other == "dies":  # its claim is gone by the time the other runs are done

            def callback(summary, planned, outcome):
                if planned is not None:
                    store.release(runs[1].key, owner="other sweep")
        else:
            callback = None
        if other == "finishes later":  # from its own connection, as another process would

            def finish():
                with Store(tmp_path / "r.sqlite") as elsewhere:
                    elsewhere.release(runs[1].key, owner="other sweep")

            threading.Timer(1.5, finish).start()
        summary = run_sweep(runs, store, callback=callback, wait_for_others=other != "runs on")
        stored = store.status(p.key for p in runs)
    if other == "runs on":
        assert (summary.done, summary.held, summary.skipped) == (2, 1, 0)
        assert runs[1].key not in stored
    else:
        assert (summary.done, summary.held, summary.skipped) == (3, 0, 0)
        assert set(stored.values()) == {OK}


KILL_SWEEP = """
name = "kill"
[base]
dim = 24
width = 24
train = { steps = 2, batch_size = 2048, residual = "y" }
readout = { samples = 512, ridge = [0.001, 0.1] }
test.samples = 512
compute.block_size = 256
[grid]
seed = [0, 1, 2, 3]
"train.step_size.scale" = [0.5, 1.0, 2.0]
"""


def _ok_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def test_kill_9_loses_no_finished_run_and_a_rerun_finishes(tmp_path):
    sweep_file = write(tmp_path, KILL_SWEEP)
    store = tmp_path / "killed.sqlite"
    command = [sys.executable, "-m", "giantstep", "sweep", str(sweep_file), "--store", str(store)]
    proc = subprocess.Popen(
        [*command, "--workers", "2"],
        env=giantstep_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while _ok_rows(store) < 5:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the sweep did not get to 5 runs"
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)  # the parent only, as `kill -9 PID` would
    proc.wait()
    # Its pool workers notice and exit: nothing keeps running after the sweep is killed.
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finished = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert 5 <= finished < 12, "the kill must land mid-sweep"
    before = numbers(store)

    rerun = subprocess.run(command, env=giantstep_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{finished} already in" in rerun.stdout
    after = numbers(store)
    assert len(after) == 12 and len(load(store)) == 12
    assert all(after[k] == v for k, v in before.items())  # finished runs untouched

    # The same numbers as an uninterrupted sweep (here in-process, in this process).
    with Store(tmp_path / "whole.sqlite") as whole:
        assert run_sweep(load_sweep(sweep_file), whole).done == 12
    assert numbers(tmp_path / "whole.sqlite") == after


KILLER = """
import os, signal
import numpy as np

def act(x):
    # A call in a worker kills it, as the OOM killer would: once per marker, or always.
    marker = os.environ["KILL_MARKER"]
    if os.getpid() != int(os.environ["SWEEP_PID"]) and not os.path.exists(marker):
        if marker != "always":
            open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return np.tanh(x)
"""


@pytest.mark.parametrize("kills", ["once", "always"])
def test_a_lost_worker_process_does_not_stop_the_sweep(tmp_path, kills):
    """A worker killed mid-run broke the process pool: its runs were marked failed, then the
    next submission raised BrokenProcessPool and the sweep stopped ('internal error', exit 1).
    Now the pool is renewed and each run it held gets a second chance; a run that kills its
    worker every time is recorded as failed, and the sweep finishes."""
    (tmp_path / "killer.py").write_text(KILLER)
    sweep_file = write(tmp_path, """
        [base]
        dim = 16
        width = 8
        activation = "py:killer:act"
        theory.errors = false
        train.batch_size = 512
        readout.samples = 256
        test.samples = 256
        [grid]
        seed = [0, 1, 2, 3]
        """)  # fmt: skip
    store = tmp_path / "r.sqlite"
    marker = tmp_path / "marker"
    env = giantstep_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    env["KILL_MARKER"] = str(marker) if kills == "once" else "always"
    command = [sys.executable, "-c", "import os; os.environ['SWEEP_PID'] = str(os.getpid()); "
               "from giantstep.cli import command_line; command_line()",
               "sweep", str(sweep_file), "--store", str(store), "--workers", "2",
               "--allow-python"]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    frame = load(store, arrays=False)
    assert len(frame) == 4
    if kills == "once":
        assert marker.exists() and set(frame["status"]) == {OK}
    else:
        assert set(frame["status"]) == {FAILED}
        assert frame["error"].str.contains("worker process died running it, twice").all()


def test_a_table_on_one_axis_is_not_changed_by_a_key_inside_it_on_another():
    """``train = [{...}]`` beside ``"train.batch_size"``: the second axis set its value inside
    the first axis's own table, so every run's label showed the last value, 1024."""
    sweep = parse_sweep(
        {
            "base": {"dim": 12, "width": 10, "theory": {"errors": False}},
            "grid": {"train": [{"batch_size": 256}], "train.batch_size": [512, 1024]},
        }
    )
    runs = sweep.expand()
    assert [run.values["train"] for run in runs] == [{"batch_size": 256}] * 2
    assert [run.config.train.batch_size for run in runs] == [512, 1024]


def _sweep_whose_workers_started(sweep: Path, tmp_path: Path) -> subprocess.Popen:
    """``giantstep sweep`` with 2 workers in its own process group (as a terminal's Ctrl-C
    finds it), returned as soon as a worker process exists."""
    process = subprocess.Popen(
        [sys.executable, "-m", "giantstep", "sweep", str(sweep), "--store",
         str(tmp_path / "r.sqlite"), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any("spawn_main" in line for line in _command_lines(process.pid)):
            break
        time.sleep(0.01)
    return process


def _command_lines(pid: int) -> list[str]:
    """The command lines of a process's children (those that are still there)."""
    lines = []
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return lines
    for child in children:
        try:
            lines.append(" ".join(child.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return lines


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path):
    """Ctrl-C reaches the whole process group: workers still importing giantstep printed
    their KeyboardInterrupt tracebacks (50–150 lines) while the parent exited with 130."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(BASE + "[grid]\nseed = [0, 1, 2, 3]\n")
    process = _sweep_whose_workers_started(sweep, tmp_path)
    # Past the milliseconds in which the parent starts them ignoring Ctrl-C (it would be lost:
    # the sweep would finish) and well within their import of giantstep (~1 s).
    time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr, stderr


def test_ctrl_c_stops_the_runs_in_flight_not_after_them(tmp_path):
    """Workers ignored Ctrl-C, so the command waited for their runs (31 s with 16-second runs),
    then for the runs already queued to them."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        "[base]\ndim = 50\nwidth = 1500\ntrain.steps = 400\ntrain.batch_size = 2048\n"
        "readout.samples = 2048\ntest.samples = 2048\n[grid]\nseed = [0, 1, 2, 3]\n"
    )  # runs of ~16 s each on 2 cores
    process = _sweep_whose_workers_started(sweep, tmp_path)
    time.sleep(4.0)  # the workers are inside their first runs
    os.killpg(process.pid, signal.SIGINT)
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert time.monotonic() - started < 8, "the command waited for the runs in flight"
    assert "Traceback" not in stdout + stderr and "Warning" not in stderr, stderr


def test_a_sweeps_claims_are_renewed_while_its_runs_are_in_flight(tmp_path):
    """Claims were renewed only as outcomes arrived: a run longer than CLAIM_TTL (an hour)
    looked abandoned, and a second sweep on the store took it over and ran it again. Now a
    thread of the sweep renews them on its own connection; it stops with the sweep."""
    import threading

    from giantstep.sweep import claims_kept_live

    path = tmp_path / "s.sqlite"
    with Store(path, owner="sweep") as store, Store(path, owner="other") as other:
        assert store.claim("long run")

        def renewed() -> float:
            with sqlite3.connect(path) as conn:
                return conn.execute("SELECT renewed FROM claims").fetchone()[0]

        with sqlite3.connect(path) as conn:  # as if claimed two hours ago
            conn.execute("UPDATE claims SET renewed = renewed - 7200")
        with claims_kept_live(store, interval=0.01):
            deadline = time.monotonic() + 30
            while time.time() - renewed() > 60 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert time.time() - renewed() < 60
            assert not other.claim("long run")  # live: not taken over
        assert not any(t.name == "giantstep-claims" for t in threading.enumerate())
