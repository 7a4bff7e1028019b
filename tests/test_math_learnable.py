"""The learnability rules' Hermite coefficients against exact integer arithmetic and closed
forms, and the prediction's plain-data form written out by hand.

Each test is small (well under a second); they pin what mutation testing found unpinned.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from giantstep.targets import TargetMomentError, parse_target
from giantstep.theory import learnable
from giantstep.theory.learnable import (
    MAX_STEPS,
    _moment_with_hermite,
    activation_support,
    canonical_basis,
    dimension_sequence,
    hermite_coefficients,
    hermite_tensors,
    predict,
)


def _hermite_integer_coefficients(n: int) -> list[int]:
    """Integer coefficients of He_n (lowest power first), by He_{k+1} = x He_k − k He_{k−1}."""
    previous, current = [], [1]
    for k in range(n):
        shifted = [0, *current]
        for i, c in enumerate(previous):
            shifted[i] -= k * c
        previous, current = current, shifted
    return current


def _gaussian_moment(m: int) -> int:
    """E[g^m] = (m − 1)!! for even m, 0 for odd m (exact)."""
    return 0 if m % 2 else math.prod(range(m - 1, 0, -2))


def _moment_reference(b: int, a: int) -> int:
    """E[g^b He_a(g)] in integers: Σ_k c_k E[g^(b+k)], c_k the coefficients of He_a."""
    return sum(c * _gaussian_moment(b + k) for k, c in enumerate(_hermite_integer_coefficients(a)))


def test_moments_with_hermite_are_exact_integers():
    # Exact integers, the zeros included (a > b, or b − a odd). (Within MAX_TENSOR_ENTRIES a
    # float b!/(j! 2^j) would round the same, but the helper's contract is the integer.)
    for b in range(13):
        for a in range(13):
            value = _moment_with_hermite(b, a)
            assert isinstance(value, int) and value == _moment_reference(b, a), (b, a)


def test_coefficients_cover_exactly_the_multi_indices_up_to_the_degree():
    c = hermite_coefficients("z1*z2")
    expected = {(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)}
    assert set(c) == expected
    assert c[(1, 1)] == 1.0 and all(c[a] == 0.0 for a in expected - {(1, 1)})


def test_a_kink_away_from_zero_is_integrated_accurately():
    # E[relu(g − a) He_n(g)] = E[relu^(n)(g − a)] (Gaussian integration by parts):
    # n = 0: φ(a) − a P(g > a); n = 1: P(g > a); n ≥ 2: φ(a) He_{n−2}(a). At a = 0.7, inside a
    # piece of the quadrature: unsplit there, the rule would be off by ~3e-5.
    a = 0.7
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(a / math.sqrt(2))
    he = [1, a, a * a - 1, a**3 - 3 * a, a**4 - 6 * a * a + 3]
    expected = [phi - a * tail, tail, *(phi * h for h in he)]
    c = hermite_coefficients("relu(z1 - 0.7)")
    for n, value in enumerate(expected):
        assert c[(n,)] == pytest.approx(value, abs=1e-12), n


def test_an_overflowing_target_is_named_without_floating_point_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TargetMomentError, match="exp\\(exp\\(exp\\(z1\\)\\)\\)"):
            hermite_coefficients("exp(exp(exp(z1)))")


def test_a_prediction_as_plain_data():
    prediction = predict("z1 + z1*z2", 1, 2, activation="relu")
    data = prediction.to_dict()
    phi0 = 1 / math.sqrt(2 * math.pi)  # μ_0(relu) = μ_2(relu) = φ(0), μ_1 = 1/2
    assert data.pop("activation_coefficients") == pytest.approx([phi0, 0.5, phi0], abs=1e-12)
    assert data == {
        "expression": "z1 + z1*z2",
        "activation": "relu",
        "batch_exponent": 1,
        "rank": 2,
        "exact": True,
        "max_degree": 2,
        "leap_index": 1,
        "steps": [
            {"step": 0, "dimension": 0, "basis": [], "added": []},
            {"step": 1, "dimension": 1, "basis": [[1.0, 0.0]], "added": [[1.0, 0.0]]},
            {
                "step": 2,
                "dimension": 2,
                "basis": [[1.0, 0.0], [0.0, 1.0]],
                "added": [[0.0, 1.0]],
            },
        ],
    }
    assert dimension_sequence(prediction) == [0, 1, 2]


@pytest.mark.parametrize("side", [0.95, 1.05])
def test_the_support_threshold_of_a_coefficient_on_both_sides(side):
    # σ = 0.1 x² + c x³ = 0.1 (He2 + 1) + c (He3 + 3 He1): μ = (0.1, 3c, 0.2, 6c). μ_3 counts as
    # non-zero when |μ_3| > 1e-7 · sqrt(3! Σ_k μ_k²/k!), Σ_k μ_k²/k! = 0.03 + 15c² (< 1, so a
    # floor at 1 or a scale of the wrong form moves the threshold by far more than 5 %).
    threshold = 1e-7 * math.sqrt(6 * 0.03)
    c = side * threshold / 6
    support = activation_support(f"poly(0, 0, 0.1, {c!r})", 3)
    assert support == [True, True, True, side > 1]


def test_prediction_arguments_at_their_limits():
    # Zero steps is the empty subspace alone; MAX_STEPS is allowed (past the fixed point steps
    # cost nothing), one more is refused; a parsed Target is taken as it is.
    assert [u.shape for u in predict("z1", 1, 0).subspaces] == [(0, 1)]
    assert len(predict("z1", 1, MAX_STEPS).subspaces) == MAX_STEPS + 1
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        predict("z1", 1, -1)
    parsed = predict(parse_target("z1 + z1*z2"), 1, 2)
    assert dimension_sequence(parsed) == [0, 1, 2] and parsed.expression == "z1 + z1*z2"


def test_a_constant_target_learns_nothing_in_its_coordinates():
    prediction = predict("1 + 0*z2", 1, 2)
    assert prediction.max_degree == 0 and prediction.leap_index == 0
    assert [u.shape for u in prediction.subspaces] == [(0, 2)] * 3


def test_a_degree_one_target_uses_the_activation_up_to_degree_one():
    # μ_0..μ_1 for a linear target; σ = He2 + 1e-8 He1 has μ_1 = 1e-8, non-zero at the scale of
    # the degrees the target uses (μ_0 = 0, μ_1): z1 is learned in one step.
    prediction = predict("z1", 1, 1, activation="poly(-1, 1e-8, 1)")
    assert len(prediction.coefficients) == 2
    assert prediction.coefficients[1] == pytest.approx(1e-8, rel=1e-6)
    assert dimension_sequence(prediction) == [0, 1]


def test_the_work_budget_is_shared_by_the_steps_and_the_leap_index(monkeypatch):
    # z1*z2*z3 at κ = 3 over 3 steps: the steps charge 60 099 multiply-adds and the leap index
    # 481 692 (counted with an unlimited budget), so a budget of 500 000 is spent only when
    # both charge the same one, and the refusal names the target.
    original = learnable._Work
    monkeypatch.setattr(learnable, "_Work", lambda expression: original(expression, 500_000))
    assert learnable.leap_index("z1*z2*z3") == 3  # alone it fits
    # ... and alone it is bounded too: at 400 000 the leap index is refused, naming the target.
    monkeypatch.setattr(learnable, "_Work", lambda expression: original(expression, 400_000))
    with pytest.raises(ValueError, match="^'z1\\*z2\\*z3': the learnability rules need more"):
        learnable.leap_index("z1*z2*z3")
    monkeypatch.setattr(learnable, "_Work", lambda expression: original(expression, 500_000))
    with pytest.raises(ValueError, match="^'z1\\*z2\\*z3': the learnability rules need more"):
        predict("z1*z2*z3", 3, 3)


def test_a_budget_may_be_spent_exactly():
    work = learnable._Work("z1", 10)
    work.spend(4)
    work.spend(6)  # exactly the budget: allowed
    with pytest.raises(ValueError, match="^'z1': .*MAX_RULE_WORK"):
        work.spend(1)


def test_the_range_tolerance_is_relative_and_depends_on_the_kind_of_target():
    # C_2 = diag(·, 2c) for the term c·He2(z2): z2 is in the range when 2c exceeds
    # tol · sqrt(2 E[g*²]), tol = 1e-7 for a polynomial (exact tensors), 1e-4 otherwise.
    cases = [
        ("z1 + 1e-5*(z2**2 - 1)", [0, 2]),  # 2e-5 > 1.4e-7
        ("10*z1 + 1e-5*(z2**2 - 1)", [0, 2]),  # 2e-5 > 1.4e-6 (E[g*²] = 100)
        ("10*z1 + 5e-8*(z2**2 - 1)", [0, 1]),  # 1e-7 < 1.4e-6: relative to sqrt(E[g*²])
        ("relu(z1) + 1e-6*(z2**2 - 1)", [0, 1]),  # 2e-6 < 1e-4: not a polynomial
    ]
    for expression, dimensions in cases:
        assert dimension_sequence(predict(expression, 2, 1)) == dimensions, expression


def test_a_target_that_is_zero_learns_nothing():
    # Every tensor is exactly 0 and so is the tolerance: no direction is in any range.
    prediction = predict("relu(z1) - relu(z1)", 1, 1)
    assert dimension_sequence(prediction) == [0, 0] and prediction.leap_index == 0
    assert prediction.exact is False  # integrated numerically, not a polynomial


def test_canonical_basis_of_a_tilted_plane_by_hand():
    # span{(1, 1, 0), (0, 0, 1)}: the projections of e_1 and e_2 are both (1/2, 1/2, 0), so
    # Gram–Schmidt keeps (1, 1, 0)/√2, drops e_2's, and ends with e_3.
    basis, _ = np.linalg.qr(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) @ [[2, 1], [1, 3]])
    expected = [[2**-0.5, 2**-0.5, 0.0], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(canonical_basis(basis), expected, rtol=0, atol=1e-12)


def test_the_work_of_a_small_prediction_counted_by_hand(monkeypatch):
    # predict("z1*z2", κ = 2, 2 steps), r = 2: a contraction of C_n costs n (|C_n| r + 20 000)
    # and the SVD of its (r, ·) block |block| r. C_1 = 0 and C_2 = e1e2ᵀ + e2e1ᵀ.
    # Step 1 (nothing learned): C_1 with k = 1 (20 004 + 4) and C_2 with k = 2 (40 016 + 8),
    # k = 1 of C_2 skipped (it needs learned coordinates): 60 032; both directions are learned.
    # Step 2: C_1, k = 1 and C_2, k = 1, 2: 20 008 + 2 × 40 024 = 100 056; nothing new, stop.
    # The leap index: κ = 1 (one step of C_1, adds nothing): 20 008; κ = 2: 160 088.
    total = 60_032 + 100_056 + 20_008 + 160_088
    original = learnable._Work
    for budget, refused in ((total, False), (total - 1, True)):
        monkeypatch.setattr(learnable, "_Work", lambda e, b=budget: original(e, b))
        if refused:
            with pytest.raises(ValueError, match="MAX_RULE_WORK"):
                predict("z1*z2", 2, 2)
        else:
            assert dimension_sequence(predict("z1*z2", 2, 2)) == [0, 2, 2]


def test_the_step_rule_with_no_tensor_beyond_degree_zero():
    # Only C_0: nothing to add, in the learned subspace's r = 3 coordinates.
    added = learnable.step_rule([np.array(1.0)], np.zeros((3, 0)), 1, [True], 1.0)
    assert added.shape == (3, 0)


def test_a_linear_target_in_two_coordinates_learns_its_one_direction():
    # C_1 = (1, 1): one step learns (1, 1)/√2 and nothing more is there; leap index 1.
    prediction = predict("z1 + z2", 1, 2)
    np.testing.assert_allclose(prediction.subspaces[1], [[2**-0.5, 2**-0.5]], rtol=0, atol=1e-12)
    assert dimension_sequence(prediction) == [0, 1, 1] and prediction.leap_index == 1


def test_the_degree_zero_tensor_is_the_mean():
    # C_0 = E[g*]: 3 for 3 + z1*z2 (E[z1 z2] = 0), 1 for z1**2 (E[g²] = 1).
    assert float(hermite_tensors("3 + z1*z2")[0]) == 3.0
    assert float(hermite_tensors("z1**2")[0]) == 1.0


def test_a_target_without_a_direction_below_the_degrees_integrated_has_no_leap_index_there():
    """He7(z1) + 0*tanh(z1), integrated numerically to degree 6, has no direction there: its
    leap index was 0 (nothing to learn), as for a constant. It is above the degrees."""
    assert learnable.leap_index("He7(z1) + 0*tanh(z1)") is None
    assert learnable.leap_index("He7(z1)") == 7  # exact: all its degrees
    assert learnable.leap_index("3 + 0*tanh(z1)") == 0 and learnable.leap_index("1 + 0*z2") == 0
