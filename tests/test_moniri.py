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
