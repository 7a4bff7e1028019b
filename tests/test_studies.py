"""The studies at their quick sizes: each runs through a store and meets its sanity anchors."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import giantstep
from giantstep.cli import main
from giantstep.store import flatten_result
from giantstep.studies import run_study, studies
from giantstep.studies.setting import moniri

NAMES = ["full-training", "inputs", "label-noise", "large-step", "many-steps"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Each quick study run once for the module (they take 7-18 s each)."""
    out = tmp_path_factory.mktemp("studies")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = run_study(studies()[name], quick=True, out=out)
        return cache[name]

    return get


def findings(report, quantity, group_prefix=""):
    return [
        f for f in report.findings if f.quantity == quantity and f.group.startswith(group_prefix)
    ]


def test_the_command_lists_the_studies():
    result = CliRunner().invoke(main, ["study"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == NAMES


def test_an_unknown_study_is_bad_input():
    result = CliRunner().invoke(main, ["study", "nope"])
    assert result.exit_code == 2 and "unknown study" in result.output


@pytest.mark.parametrize("name", NAMES)
def test_each_study_writes_its_figures_and_reports_findings(reports, name):
    report = reports(name)
    assert report.findings and report.conclusions
    assert {p.suffix for p in report.figures} == {".png", ".pdf"}
    assert all(p.stat().st_size > 1000 for p in report.figures)
    assert all(f.seeds >= 1 for f in report.findings if f.measured is not None)
    json.dumps(report.to_dict())


def test_inputs_gaussian_case_matches_the_band_rule_and_gamma(reports):
    report = reports("inputs")
    spikes = findings(report, "spikes", "gaussian, β Haar")[0]
    assert spikes.measured == spikes.predicted == 2 and spikes.spread == 0
    cosine = findings(report, "cos(update, β)", "gaussian, β Haar")[0]
    assert abs(cosine.measured - cosine.predicted) < 0.03
    # Rademacher along an axis: He2(x1) = 0, the degree-2 spike is gone (universality breaks).
    assert findings(report, "spikes", "rademacher, β = e_1")[0].measured == 1


def _plain(config):
    return flatten_result(giantstep.run(config).model_dump(mode="json"))[0]


def test_label_noise_zero_equals_a_plain_run_and_follows_gamma(reports, tmp_path):
    report = reports("label-noise")
    plain = _plain(moniri(200, 800, 0.3, seed=0))
    from giantstep.store import load

    frame = load(report.store, arrays=False)
    row = frame[(frame["target.noise"] == 0) & (frame["target.corruption"] == 0)
                & (frame["train.batch_size"] == 800) & (frame["seed"] == 0)]  # fmt: skip
    assert len(row) == 1
    for key in ("errors.1.test_error", "alignment.1.update_cosine", "spectrum.singular_values.0"
                if "spectrum.singular_values.0" in plain else "spectrum.spikes"):  # fmt: skip
        assert row.iloc[0][key] == plain[key], key
    for f in findings(report, "cos(update, β)", "n = 3200"):
        if f.predicted:  # γ > 0
            assert abs(f.measured - f.predicted) < 0.05, f
    for f in findings(report, "cos(update, β)"):
        if f.group.endswith("p = 1"):
            assert f.measured < 3 / np.sqrt(200)


def test_many_steps_one_step_equals_a_plain_run(reports):
    report = reports("many-steps")
    from giantstep.store import load

    frame = load(report.store, arrays=False)
    row = frame[(frame["train.steps"] == 1) & (frame["seed"] == 0)
                & (frame["train.step_size.batch_exponent"] == 0.3)]  # fmt: skip
    plain = _plain(moniri(200, 800, 0.3, seed=0, max_degree=3))
    for key in ("errors.1.test_error", "alignment.1.update_cosine", "spectrum.spikes"):
        assert row.iloc[0][key] == plain[key], key


def test_full_training_lowers_its_loss_and_beats_random_features(reports):
    report = reports("full-training")
    for n in (256, 1024):
        first = findings(report, "full: train loss, first epoch", f"n = {n}")[0].measured
        last = findings(report, "full: train loss, last epoch", f"n = {n}")[0].measured
        assert last < first / 10
        full = findings(report, "test error, fully trained", f"n = {n}")[0].measured
        rf = findings(report, "test error, random features", f"n = {n}")[0].measured
        assert full < rf


def test_a_killed_study_finishes_with_the_same_findings_and_no_duplicate_rows(tmp_path):
    command = [sys.executable, "-m", "giantstep", "study", "label-noise", "--quick", "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(giantstep.__file__).parents[1])}
    killed = tmp_path / "killed.sqlite"
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path / "a"), "--store", str(killed)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if killed.exists():
            try:
                with sqlite3.connect(killed) as conn:
                    if conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] >= 5:
                        break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with sqlite3.connect(killed) as conn:
        done = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert 5 <= done < 16  # killed mid-way

    def finish(store, out):
        result = subprocess.run([*command, "--out", str(out), "--store", str(store)], env=env,
                                capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(result.stdout)

    resumed = finish(killed, tmp_path / "a")
    assert resumed["runs"] == 16 and resumed["ran_now"] == 16 - done
    with sqlite3.connect(killed) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM runs").fetchone() == (16, 16)
    fresh = finish(tmp_path / "fresh.sqlite", tmp_path / "b")
    assert resumed["findings"] == fresh["findings"]
    assert resumed["conclusions"] == fresh["conclusions"]
