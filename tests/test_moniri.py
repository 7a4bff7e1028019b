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
    # Every band of the default --max-degree 6, its edges (ℓ−1)/(2ℓ), ℓ/(2ℓ+2) as fractions.
    assert [b["ell"] for b in table] == [1, 2, 3, 4, 5, 6]
    assert [(b["lower"], b["upper"]) for b in table] == [
        ("0", "1/4"), ("1/4", "1/3"), ("1/3", "3/8"), ("3/8", "2/5"), ("2/5", "5/12"),
        ("5/12", "3/7"),
    ]  # fmt: skip
    # relu has μ_3 = μ_5 = 0: bands 3 and 5 add no spike.
    assert [b["spikes"] for b in table] == [1, 2, 2, 3, 3, 4]
    assert [b["degrees"] for b in table][-1] == [1, 2, 4, 6]
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
