"""The Cui et al. reproduction at its quick sizes: every check of the report holds."""

from giantstep.reproduce import reproductions
from giantstep.reproduce.cui import STUDENTS


def test_quick_cui_learning_curve_holds(tmp_path):
    report = reproductions()["cui-learning-curve"](True, tmp_path)
    failed = [c for c in report.checks if not c.holds]
    assert not failed, failed
    claims = [c.claim for c in report.checks]
    for student in STUDENTS:
        assert any(c.startswith(f"{student}: one step beats random features") for c in claims)
        assert f"{student}: trained layer theory vs simulation, n/d ≥ 1" in claims
        assert f"{student}: random features theory vs simulation, n/d ≥ 1" in claims
    # The relu student's predicted layer is flagged (μ2(σ)μ2(σ*) ≠ 0 at n0 = 2d): not checked.
    assert "tanh: spiked theory vs simulation, n/d ≥ 1" in claims
    assert "relu: spiked theory vs simulation, n/d ≥ 1" not in claims
    assert [p.name for p in report.figures] == ["cui-learning-curve.png"]
    assert report.figures[0].stat().st_size > 10_000
