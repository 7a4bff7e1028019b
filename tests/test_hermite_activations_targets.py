"""Hermite coefficients against closed forms, activations' derivatives, and the target parser."""

import ast
import re
from math import factorial, pi, sqrt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from giantstep.activations import Activation, get_activation
from giantstep.hermite import (
    coefficients,
    gaussian_expectation,
    hermite,
    hermite_table,
    product_rule,
)
from giantstep.polynomial import gaussian_moment
from giantstep.targets import parse_target, teacher_directions

PHI0 = 1 / sqrt(2 * pi)
K = 12


def he_at_zero(m: int) -> float:
    """``He_m(0)``: 0 for odd m, ``(−1)^{m/2} (m − 1)!!`` for even m."""
    return 0.0 if m % 2 else (-1) ** (m // 2) * gaussian_moment(m)


def relu_closed_form(k: int) -> float:
    # μ_k(relu) = E[1{g>0} He_{k−1}(g)] = φ(0) He_{k−2}(0) for k ≥ 2 (Stein's lemma).
    return {0: PHI0, 1: 0.5}.get(k, PHI0 * he_at_zero(k - 2) if k >= 2 else 0.0)


def sign_closed_form(k: int) -> float:
    return 2 * PHI0 * he_at_zero(k - 1) if k >= 1 else 0.0


def abs_closed_form(k: int) -> float:
    return {0: 2 * PHI0, 1: 0.0}.get(k, 2 * PHI0 * he_at_zero(k - 2) if k >= 2 else 0.0)


def test_hermite_recurrence_matches_numpy():
    x = np.linspace(-3, 3, 7)
    for k in range(10):
        reference = np.polynomial.hermite_e.hermeval(x, [0] * k + [1])
        np.testing.assert_allclose(hermite(k, x), reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "closed_form"),
    [
        ("relu", relu_closed_form),
        ("sign", sign_closed_form),
        ("abs", abs_closed_form),
        ("leaky_relu(0.2)", lambda k: 0.2 * (k == 1) + 0.8 * relu_closed_form(k)),
    ],
)
def test_kinked_activations_match_closed_forms(name, closed_form):
    mu = get_activation(name).hermite_coefficients(K)
    expected = np.array([closed_form(k) for k in range(K + 1)])
    np.testing.assert_allclose(mu, expected, rtol=0, atol=1e-8)


def test_a_kink_off_the_quadrature_grid_is_split_there():
    """relu(x − 1/3): μ_0 = φ(t) − t Φ̄(t), μ_1 = Φ̄(t), μ_k = φ(t) He_{k−2}(t) (Stein), to
    1e-12. The pieces of the rule have edges at multiples of 1/2, so kinks at 0 (relu, abs,
    sign) are split anyway; a kink at 1/3 is split only if the kink is honoured (else the
    error is 4e-5). The same for a target: relu(z1 − 0.3) has C_1 = Φ̄(0.3) and
    E[y²] = (1 + t²) Φ̄(t) − t φ(t)."""
    from scipy.stats import norm

    t = 1 / 3
    shifted = Activation.from_callable(lambda x: np.maximum(x - t, 0), kinks=(t,))
    mu = shifted.hermite_coefficients(8)
    expected = [norm.pdf(t) - t * norm.sf(t), norm.sf(t)]
    expected += [norm.pdf(t) * hermite(k - 2, t) for k in range(2, 9)]
    np.testing.assert_allclose(mu, expected, rtol=0, atol=1e-12)
    target, t = parse_target("relu(z1 - 0.3)"), 0.3
    assert target.linear_coefficients()[0] == pytest.approx(norm.sf(t), abs=1e-12)
    second = (1 + t * t) * norm.sf(t) - t * norm.pdf(t)
    assert target.second_moment() == pytest.approx(second, abs=1e-12)


def test_relu_sixth_coefficient_that_gauss_hermite_misses():
    assert abs(get_activation("relu").hermite_coefficients(6)[6] - 3 / sqrt(2 * pi)) < 1e-10


def test_tanh_matches_adaptive_quadrature():
    mu = get_activation("tanh").hermite_coefficients(8)
    for k in range(9):
        reference, _ = integrate.quad(
            lambda g, k=k: np.tanh(g) * hermite(k, g) * np.exp(-g * g / 2) * PHI0,
            -40,
            40,
            epsabs=1e-12,
            epsrel=1e-12,
            limit=400,
        )
        assert abs(mu[k] - reference) < 1e-9


def test_polynomials_are_exact():
    # x³ = He3 + 3 He1  →  μ_1 = 3, μ_3 = 3! = 6.
    mu = get_activation("poly(0, 0, 0, 1)").hermite_coefficients(6)
    np.testing.assert_allclose(mu, [0, 3, 0, 6, 0, 0, 0], atol=1e-10)
    for k in range(1, 8):
        mu = get_activation(f"He{k}").hermite_coefficients(9)
        expected = np.zeros(10)
        expected[k] = factorial(k)
        np.testing.assert_allclose(mu, expected, atol=1e-9 * factorial(k))


def test_low_degrees_constants_integers_and_bad_arguments():
    """The corners mutmut found untested: K = 0 and K = 1 (the table's first rows), a constant
    function (broadcast to the nodes), integer inputs, and errors that say what is wrong."""
    half = np.exp(0.5)
    np.testing.assert_allclose(coefficients(np.exp, 0), [half], rtol=1e-12)
    np.testing.assert_allclose(coefficients(np.exp, 1), [half, half], rtol=1e-12)
    np.testing.assert_allclose(hermite_table(1, np.array([0.5, 2.0])), [[1, 1], [0.5, 2.0]])
    np.testing.assert_allclose(coefficients(lambda x: 2.0, 2), [2.0, 0.0, 0.0], atol=1e-13)
    integers = hermite(3, np.array([0, 1, 2]))  # He3 = x³ − 3x
    assert integers.dtype == np.float64
    np.testing.assert_array_equal(integers, [0.0, -2.0, 2.0])
    with pytest.raises(ValueError, match="degree must be >= 0, got -1"):
        hermite(-1, 0.5)
    with pytest.raises(ValueError, match="max_degree must be >= 0, got -1"):
        coefficients(np.exp, -1)
    with pytest.raises(ValueError, match="not finite on the quadrature nodes"):
        coefficients(lambda x: np.where(x > 10, np.inf, 1.0), 2)
    with pytest.raises(ValueError, match="rank 1..4, got 5"):
        product_rule(5)
    with pytest.raises(ValueError, match="^max_degree must be >= 0, got -2"):
        hermite_table(-2, np.array([0.5]))


def test_a_function_that_is_not_elementwise_is_refused():
    """μ_k needs f's value at each node: a column of values (one per node, shape (M, 1)) is
    not a function of the nodes to broadcast, and must not turn into an M × M table."""
    with pytest.raises(ValueError):
        coefficients(lambda x: x[:, None], 2)


def test_coefficients_of_a_plain_callable():
    mu = coefficients(lambda x: np.exp(x), 5)
    # E[e^g He_k(g)] = e^{1/2} for every k.
    np.testing.assert_allclose(mu, np.full(6, np.exp(0.5)), rtol=1e-12)
    assert gaussian_expectation(np.abs, kinks=(0.0,)) == pytest.approx(sqrt(2 / pi), abs=1e-13)


@pytest.mark.parametrize(
    "name",
    [
        "tanh",
        "relu",
        "leaky_relu",
        "erf",
        "sigmoid",
        "softplus",
        "gelu",
        "sin",
        "abs",
        "linear",
        "He3",
        "poly(1, -2, 0.5, 0.25)",
    ],
)
def test_derivatives_match_finite_differences(name):
    activation = get_activation(name)
    x = np.linspace(-3.1, 2.9, 41)  # avoids the kink at 0
    h = 1e-6
    numeric = (activation(x + h) - activation(x - h)) / (2 * h)
    np.testing.assert_allclose(activation.derivative(x), numeric, rtol=1e-6, atol=1e-6)
    value, slope = activation.value_and_derivative(x)
    np.testing.assert_array_equal(value, activation(x))
    np.testing.assert_array_equal(slope, activation.derivative(x))


@pytest.mark.parametrize("name", ["tanh", "relu", "gelu", "softplus", "He4", "poly(0, 1, 1)"])
def test_float32_stays_float32_and_outputs_are_fresh(name):
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    before = x.copy()
    value, slope = get_activation(name).value_and_derivative(x)
    assert value.dtype == slope.dtype == np.float32
    value += 1
    slope += 1
    np.testing.assert_array_equal(x, before)


def test_user_callable_with_and_without_derivative():
    computed = Activation.from_callable(np.tanh)
    x = np.linspace(-2, 2, 11)
    np.testing.assert_allclose(computed.derivative(x), 1 - np.tanh(x) ** 2, atol=1e-9)
    given = Activation.from_callable(np.sin, np.cos)
    np.testing.assert_array_equal(given.derivative(x), np.cos(x))
    np.testing.assert_allclose(
        get_activation("py:numpy:tanh").hermite_coefficients(4),
        get_activation("tanh").hermite_coefficients(4),
        atol=1e-14,
    )


@pytest.mark.parametrize(
    "bad",
    ["nope", "leaky_relu(x)", "poly()", "py:numpy", "py:numpy:nope", "py:no_such_module:f", "He-1"],
)
def test_unknown_activations_are_rejected(bad):
    with pytest.raises(ValueError, match="activation|poly|py:|module|function"):
        get_activation(bad)


def test_target_values_and_polynomials():
    target = parse_target("z1 + He2(z1)/2 - 3*z2**2 + tanh(z3)")
    h = np.random.default_rng(0).standard_normal((50, 3))
    expected = h[:, 0] + (h[:, 0] ** 2 - 1) / 2 - 3 * h[:, 1] ** 2 + np.tanh(h[:, 2])
    np.testing.assert_allclose(target(h), expected, rtol=1e-13)
    assert target.rank == 3 and not target.is_polynomial

    poly = parse_target("z1 + He2(z1)/2")
    assert poly.is_polynomial
    np.testing.assert_allclose(poly.polynomial(h[:, :1]), poly(h[:, :1]), rtol=1e-13)
    assert poly.second_moment(noise=0.5) == pytest.approx(1 + 0.5 + 0.25)
    np.testing.assert_allclose(poly.linear_coefficients(), [1.0])


def test_numerical_expectations_of_non_polynomial_targets():
    # E[tanh(g)^2] by 1-D quadrature, twice (one per coordinate).
    tanh_sq = integrate.quad(
        lambda g: np.tanh(g) ** 2 * np.exp(-g * g / 2) * PHI0, -40, 40, epsabs=1e-13
    )[0]
    assert parse_target("tanh(z1) + tanh(z2)").second_moment() == pytest.approx(
        2 * tanh_sq, abs=1e-9
    )
    assert parse_target("sign(z1*z2*z3)").second_moment() == pytest.approx(1.0, abs=1e-9)
    # relu(z1 − 1/2): kink found at 1/2; E[relu(g − t) g] = P(g > t).
    target = parse_target("relu(z1 - 0.5)")
    assert 0.5 in target.kinks()
    from scipy.stats import norm

    assert target.linear_coefficients()[0] == pytest.approx(norm.sf(0.5), abs=1e-10)
    nodes, weights = product_rule(2)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12) and nodes.shape[1] == 2


@pytest.mark.parametrize(
    "bad",
    [
        "__import__('os')",
        "os.system('ls')",
        "z1.real",
        "z1[0]",
        "open('f')",
        "lambda: z1",
        "z1 if z2 else z3",
        "[z1]",
        "'a' + z1",
        "True * z1",
        "z1 +",
        "",
        "3",
        "z0 + z1",
        "tanh(z1, z2)",
        "tanh(x=z1)",
        "1/0 + z1",
        "z1 @ z2",
        "z1 // 2",
        "(z1 := 2)",
    ],
)
def test_parser_rejects_everything_else(bad):
    with pytest.raises(ValueError):
        parse_target(bad)


def test_teacher_directions_are_orthonormal_and_seeded():
    a = teacher_directions(np.random.default_rng(3), 3, 40)
    b = teacher_directions(np.random.default_rng(3), 3, 40)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a @ a.T, np.eye(3), atol=1e-13)


_atoms = st.sampled_from(["z1", "z2", "z3", "2", "0.5", "-1.5"])


def _expressions(depth: int = 3):
    return st.recursive(
        _atoms,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(st.sampled_from(["He1", "He2", "He3"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
            st.tuples(inner, st.sampled_from(["2", "3"])).map(lambda t: f"({t[0]})**{t[1]}"),
        ),
        max_leaves=6,
    )


@settings(max_examples=60, deadline=None)
@given(_expressions())
def test_polynomial_expansion_agrees_with_evaluation(expression):
    if not any(z in expression for z in ("z1", "z2", "z3")):
        return
    target = parse_target(expression)
    assert target.degree is not None  # a polynomial, whether or not it is expanded
    if not target.is_polynomial:
        return  # its expansion would pass giantstep.targets.MAX_TERMS or MAX_EXPANSION_WORK
    h = np.random.default_rng(1).uniform(-1.5, 1.5, (20, target.rank))
    np.testing.assert_allclose(target.polynomial(h), target(h), rtol=1e-9, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="z12+-*/()._'\"[]:=,abcdefghijklmnopqrstuvwxyz ", max_size=30),
        _expressions(),
    )
)
def test_parser_accepts_only_expressions_in_z_and_evaluates_them(text):
    """Any text either raises ValueError with a message (any other exception fails the test),
    or is a Python expression whose rank is its largest z-index and whose value on h is one
    real label per row (the polynomial form, when there is one, agreeing with it)."""
    try:
        target = parse_target(text)
    except ValueError as err:
        assert str(err)
        return
    tree = ast.parse(text.strip(), mode="eval")  # accepted text is an expression ...
    indices = [int(n.id[1:]) for n in ast.walk(tree)
               if isinstance(n, ast.Name) and re.fullmatch(r"z[1-9][0-9]*", n.id)]  # fmt: skip
    assert indices and target.rank == max(indices)  # ... in the coordinates z1..zr
    h = np.random.default_rng(0).uniform(0.5, 1.5, (7, target.rank))
    values = target(h)
    assert values.shape == (7,) and values.dtype == np.float64
    if target.is_polynomial:
        np.testing.assert_allclose(target.polynomial(h), values, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bad", ["2**9999 * z1", "(-8)**0.5 * z1", "0**-1 * z1", "10**400 + z1"])
def test_constant_parts_must_be_finite_real_numbers(bad):
    with pytest.raises(ValueError, match="finite real"):
        parse_target(bad)


def test_constant_functions_fold_into_polynomials():
    target = parse_target("tanh(1) * z1 + He2(2)")
    assert target.is_polynomial
    assert target.linear_coefficients()[0] == pytest.approx(np.tanh(1.0), abs=1e-15)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("z1**2.5", "fractional power"),
        ("(z1 + 1)**0.5", "fractional power"),
        ("z1**z2", "variable exponent"),
        ("(-2)**z1", "variable exponent"),
    ],
)
def test_powers_that_would_give_nan_labels_are_rejected(bad, why):
    with pytest.raises(ValueError, match=why):
        parse_target(bad)


@pytest.mark.parametrize("good", ["abs(z1)**1.5", "relu(z1)**0.5", "exp(z1)**0.5", "2**z1"])
def test_powers_defined_for_every_input_are_accepted(good):
    target = parse_target(good)
    h = np.random.default_rng(0).standard_normal((100, 1))
    assert np.isfinite(target(h)).all()
