"""The Moniri et al. reproductions at their quick sizes: every check of the report holds."""

import json

import pytest
from click.testing import CliRunner

from giantstep.cli import main
from giantstep.reproduce import reproductions


@pytest.mark.parametrize("name", ["moniri-spikes", "moniri-equivalence", "moniri-nonlinear"])
def test_quick_reproduction_holds(name, tmp_path):
    report = reproductions()[name](True, tmp_path)
    failed = [c for c in report.checks if not c.holds]
    assert not failed, failed
    assert report.checks and all(p.exists() for p in report.figures)


def test_theory_phases_prints_the_band_table():
    result = CliRunner().invoke(main, ["theory", "phases", "--activation", "relu", "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)["bands"]
    assert [b["ell"] for b in table[:3]] == [1, 2, 3]
    assert table[0]["lower"] == "0" and table[0]["upper"] == "1/4"
    # relu has μ_3 = 0: the band ℓ = 3 still has two spikes.
    assert [b["spikes"] for b in table[:3]] == [1, 2, 2]
    text = CliRunner().invoke(main, ["theory", "phases", "--activation", "tanh"])
    assert text.exit_code == 0 and "1/4" in text.output
    bad = CliRunner().invoke(main, ["theory", "phases", "--activation", "nope"])
    assert bad.exit_code == 2 and "activation" in bad.output


def test_run_json_has_the_spectrum_block():
    args = ["run", "--json", "--set", "spectrum.enabled=true", "--set", "dim=64",
            "--set", "width=64", "--set", "train.batch_size=512", "--set", "readout.samples=512",
            "--set", "test.samples=256"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    block = json.loads(result.output)["spectrum"]
    for key in ("singular_values", "initial_singular_values", "bulk_edge", "spikes", "mean_spike",
                "spike_alignment", "predicted_spikes", "approximation_error"):  # fmt: skip
        assert key in block
    assert block["predicted_spikes"] == 2  # the default run has α = 0.3
    bad = CliRunner().invoke(main, ["run", "--set", "spectrum.max_degree=0"])
    assert bad.exit_code == 2 and "spectrum.max_degree" in bad.output
