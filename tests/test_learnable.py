"""The learnability predictor: Hermite tensors against closed forms, the rules against hand
derivations (SCIENCE.md §3 [D])."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from giantstep.activations import get_activation
from giantstep.cli import main
from giantstep.overlaps import same_subspace
from giantstep.targets import parse_target
from giantstep.theory.learnable import (
    _numerical_coefficients,
    activation_support,
    hermite_coefficients,
    hermite_tensors,
    leap_index,
    predict,
)

#: μ_1..μ_4 all non-zero: σ = x + x²/2 + x³/2 + x⁴/4 has μ_k = E[σ^(k)] = 2.5, 4, 3, 6.
FULL = "poly(0, 1, 0.5, 0.5, 0.25)"
S = 2**-0.5


def test_the_full_activation_has_mu_1_to_4():
    np.testing.assert_allclose(get_activation(FULL).hermite_coefficients(4)[1:], [2.5, 4, 3, 6])
    assert activation_support(FULL, 4)[1:] == [True] * 4
    assert activation_support("relu", 5)[1:] == [True, True, False, True, False]
    assert activation_support("tanh", 5)[1:] == [True, False, True, False, True]


def test_polynomial_tensors_are_exact():
    c = hermite_tensors("z1 + z1*z2 + z1*z2*z3")
    assert len(c) == 4
    np.testing.assert_array_equal(c[1], [1, 0, 0])
    np.testing.assert_array_equal(c[2], [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    # C_3 is e1⊗e2⊗e3 symmetrised: 1 at the 6 permutations of (0, 1, 2).
    assert c[3].sum() == 6 and c[3][0, 1, 2] == c[3][2, 1, 0] == 1
    he3 = hermite_tensors("He3(z1)")
    assert [t.sum() for t in he3] == [0, 0, 0, 6]  # E[He3²] = 3! = 6
    assert hermite_coefficients("He2(z1) + z2")[(2, 0)] == 2


def test_numerical_tensors_match_closed_forms():
    # sign(z1 z2 z3): only all-odd multi-indices; c_111 = E|g|³... = (2/π)^{3/2}.
    c = hermite_coefficients("sign(z1*z2*z3)")
    assert c[(1, 1, 1)] == pytest.approx((2 / np.pi) ** 1.5, abs=1e-9)
    assert max(abs(v) for a, v in c.items() if not all(x % 2 for x in a)) < 1e-9
    # tanh(z1) + tanh(z2): c_(k,0) = μ_k(tanh), no mixed terms.
    c = hermite_coefficients("tanh(z1) + tanh(z2)")
    mu = get_activation("tanh").hermite_coefficients(6)
    for k in range(7):
        assert c[(k, 0)] == pytest.approx(mu[k], abs=1e-9)
        assert c[(0, k)] == pytest.approx(mu[k], abs=1e-9)
    assert abs(c[(1, 1)]) < 1e-9 and abs(c[(3, 1)]) < 1e-9
    # A tilted kink: relu(a·h), |a| = s: c_(n,0) = μ_n(relu) a_1^n / s^{n−1}; about 1e-5.
    c = hermite_coefficients("relu(z1 - 0.5*z2)")
    s = np.sqrt(1.25)
    for n, mu_n in ((2, 1 / np.sqrt(2 * np.pi)), (4, -1 / np.sqrt(2 * np.pi))):
        assert c[(n, 0)] == pytest.approx(mu_n / s ** (n - 1), abs=1e-4)


def test_the_numerical_path_agrees_with_the_exact_one_on_a_polynomial():
    target = parse_target("z1 + z1*z2 + He3(z2) - 0.5*z1**2*z2**2")
    exact = hermite_coefficients(target)
    numerical = _numerical_coefficients(target, 4)
    for alpha, value in numerical.items():
        assert value == pytest.approx(exact[alpha], abs=1e-9)


E1, E2, E3 = np.eye(3)
X1, X2 = np.eye(2)
U, V = np.array([S, S]), np.array([S, -S])

# (target, activation, κ) -> subspace after steps 1, 2, 3, derived by hand from the rules.
EXPECTED = {
    # Staircase: degree-1 in the new coordinate beside degree m needs μ_{m+1}.
    ("z1 + z1*z2 + z1*z2*z3", "relu", 1): [[E1], [E1, E2], [E1, E2]],  # μ3(relu) = 0
    ("z1 + z1*z2 + z1*z2*z3", "tanh", 1): [[E1], [E1], [E1]],  # μ2(tanh) = 0
    ("z1 + z1*z2 + z1*z2*z3", FULL, 1): [[E1], [E1, E2], [E1, E2, E3]],
    ("z1 + z1*z2 + z1*z2*z3", "relu", 2): [[E1, E2]] * 3,
    # tanh at κ = 2: C_2 is not learned (μ2 = 0); z1·(z2 z3) brings z2, z3 at step 2 via μ3.
    ("z1 + z1*z2 + z1*z2*z3", "tanh", 2): [[E1], [E1, E2, E3], [E1, E2, E3]],
    ("z1 + z1*z2 + z1*z2*z3", FULL, 2): [[E1, E2], [E1, E2, E3], [E1, E2, E3]],
    ("z1 + z1*z2 + z1*z2*z3", "relu", 3): [[E1, E2]] * 3,
    ("z1 + z1*z2 + z1*z2*z3", "tanh", 3): [[E1, E2, E3]] * 3,
    ("z1 + z1*z2 + z1*z2*z3", FULL, 3): [[E1, E2, E3]] * 3,
    # Leap 2.
    ("z1*z2", "relu", 1): [[]] * 3,
    ("z1*z2", FULL, 1): [[]] * 3,
    ("z1*z2", "relu", 2): [[X1, X2]] * 3,
    ("z1*z2", "tanh", 2): [[]] * 3,
    ("z1*z2", "tanh", 3): [[]] * 3,
    ("z1*z2", FULL, 3): [[X1, X2]] * 3,
    # Leap 3.
    ("He3(z1)", "relu", 3): [[]] * 3,
    ("He3(z1)", "tanh", 2): [[]] * 3,
    ("He3(z1)", "tanh", 3): [[[1.0]]] * 3,
    ("He3(z1)", FULL, 3): [[[1.0]]] * 3,
    ("He3(z1)", FULL, 1): [[]] * 3,
    # A linear direction and a leap-2 one.
    ("He2(z1) + z2", "relu", 1): [[X2]] * 3,
    ("He2(z1) + z2", FULL, 1): [[X2]] * 3,
    ("He2(z1) + z2", "relu", 2): [[X1, X2]] * 3,
    ("He2(z1) + z2", "tanh", 2): [[X2]] * 3,
    ("He2(z1) + z2", "tanh", 3): [[X2]] * 3,
    ("He2(z1) + z2", FULL, 3): [[X1, X2]] * 3,
    # Even in z1 − z2: C_1 ∝ (1, 1) only; z1 − z2 enters at degree 2 beside odd degrees in
    # z1 + z2, so it needs κ ≥ 2 and an odd μ_{≥3} (never with relu).
    ("tanh(z1) + tanh(z2)", "relu", 1): [[U]] * 3,
    ("tanh(z1) + tanh(z2)", "relu", 2): [[U]] * 3,
    ("tanh(z1) + tanh(z2)", "relu", 3): [[U]] * 3,
    ("tanh(z1) + tanh(z2)", "tanh", 1): [[U]] * 3,
    ("tanh(z1) + tanh(z2)", "tanh", 2): [[U], [U, V], [U, V]],
    ("tanh(z1) + tanh(z2)", "tanh", 3): [[U, V]] * 3,
    ("tanh(z1) + tanh(z2)", FULL, 2): [[U], [U, V], [U, V]],
    # Leap 3, all three at once, only with μ3 ≠ 0.
    ("sign(z1*z2*z3)", "relu", 3): [[]] * 3,
    ("sign(z1*z2*z3)", "tanh", 2): [[]] * 3,
    ("sign(z1*z2*z3)", "tanh", 3): [[E1, E2, E3]] * 3,
    ("sign(z1*z2*z3)", FULL, 1): [[]] * 3,
    ("sign(z1*z2*z3)", FULL, 3): [[E1, E2, E3]] * 3,
}


@pytest.mark.parametrize(("expression", "activation", "kappa"), list(EXPECTED))
def test_predictor_follows_the_rules(expression, activation, kappa):
    prediction = predict(expression, kappa, 3, activation)
    assert len(prediction.subspaces) == 4 and prediction.subspaces[0].shape[0] == 0
    for t, expected in enumerate(EXPECTED[(expression, activation, kappa)], start=1):
        got = prediction.subspaces[t]
        assert same_subspace(got, np.array(expected), tolerance=1 - 1e-9), (t, got)
        np.testing.assert_allclose(got @ got.T, np.eye(got.shape[0]), atol=1e-12)


@pytest.mark.parametrize(
    ("expression", "leap"),
    [
        ("z1 + z1*z2 + z1*z2*z3", 1),
        ("z1*z2", 2),
        ("He3(z1)", 3),
        ("He2(z1) + z2", 2),
        ("tanh(z1) + tanh(z2)", 2),
        ("sign(z1*z2*z3)", 3),
        ("z1**2 - 1 + 0*z2", 2),
    ],
)
def test_leap_index(expression, leap):
    assert leap_index(expression) == leap


def test_prediction_rotates_with_the_coordinates():
    # u + u·v with u = (z1 + z2)/√2, v = (z1 − z2)/√2: the staircase z1 + z1 z2, rotated.
    rotated = predict("(z1 + z2)/2**0.5 + (z1 + z2)*(z1 - z2)/2", 1, 2, "relu")
    assert rotated.exact
    assert same_subspace(rotated.subspaces[1], U[None], tolerance=1 - 1e-9)
    assert same_subspace(rotated.subspaces[2], np.eye(2), tolerance=1 - 1e-9)
    assert same_subspace(rotated.added[1], V[None], tolerance=1 - 1e-9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="κ"):
        predict("z1", 0, 1)
    with pytest.raises(ValueError, match="rank"):
        predict("tanh(z1+z2+z3+z4+z5)", 1, 1)


def test_cli_prints_the_subspace_per_step():
    runner = CliRunner()
    args = ["theory", "learnable", "z1 + z1*z2 + z1*z2*z3", "--batch-exponent", "1", "--steps", "3"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "(1, 0, 0) (0, 1, 0)" in result.output and "leap index 1" in result.output
    result = runner.invoke(main, [*args, "--json"])
    data = json.loads(result.output)
    assert [s["dimension"] for s in data["steps"]] == [0, 1, 2, 2]
    assert data["steps"][2]["added"] == [[0.0, 1.0, 0.0]]
    result = runner.invoke(main, [*args[:-2], "--steps", "2", "--activation", FULL, "--json"])
    assert [s["dimension"] for s in json.loads(result.output)["steps"]] == [0, 1, 2]
    for bad in (["z1 +", "-k", "1"], ["z1", "-k", "1", "--activation", "nope"], ["z1", "-k", "0"]):
        result = runner.invoke(main, ["theory", "learnable", *bad])
        assert result.exit_code == 2, result.output


def test_a_run_predicts_once_per_target_and_hands_out_its_own_lists():
    """Runs sharing a target, κ, T and σ share one prediction (the predictor's rules cost ~1 ms
    a run), equal to predict's, and each run gets lists of its own to keep."""
    from giantstep import experiment
    from giantstep.config import validate_config

    config = validate_config({"dim": 40, "width": 8, "target": {"expression": "z1 + z1*z2"},
                              "train": {"steps": 2, "batch_size": 256}})  # fmt: skip
    experiment._predicted_subspaces.cache_clear()
    first = experiment.predicted_subspaces(config)
    first[1].append([9.0, 9.0])
    second = experiment.predicted_subspaces(config)
    assert experiment._predicted_subspaces.cache_info().hits == 1
    want = predict("z1 + z1*z2", config.batch_exponent(), 2, activation=config.activation)
    assert second == [u.tolist() for u in want.subspaces]
