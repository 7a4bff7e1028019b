"""Activations against closed forms and hand-built cases: the central difference's step, the
fused passes at the kinks, the leaky relu's Hermite coefficients, user functions' failures.

Each test is small (well under a second); they pin what mutation testing found unpinned.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest

from giantstep.activations import (
    MAX_SPEC_LENGTH,
    Activation,
    UserFunctionError,
    check_activation,
    get_activation,
)

PHI0 = 1 / math.sqrt(2 * math.pi)  # φ(0), the standard normal density at 0


def test_central_difference_of_a_sine_is_its_closed_form():
    # (sin(ω(x+h)) − sin(ω(x−h)))/(2h) = ω cos(ωx) · sin(ωh)/(ωh) exactly, with the documented
    # step h = 6e-6 · max(1, |x|): at ω = 1000 the factor sin(ωh)/(ωh) is 1 − 6e-6 (1 − 2.4e-5
    # for a step twice as large), far above the rounding (~1e-13 relative).
    omega = 1000.0
    sigma = Activation.from_callable(lambda x: np.sin(omega * x), name="sin1000")
    x = np.array([0.3, -0.7, 3.2, -5.1])
    h = 6e-6 * np.maximum(1.0, np.abs(x))
    expected = np.cos(omega * x) * np.sin(omega * h) / h
    np.testing.assert_allclose(sigma.derivative(x), expected, rtol=1e-8)


def test_central_difference_of_a_float32_input_is_computed_in_float64():
    sigma = Activation.from_callable(np.sin, name="sin")
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    slope = sigma.derivative(x)
    assert slope.dtype == np.float32
    # In float32 a step of 6e-6 is ~50 ulps: the difference would be off by ~1e-2.
    np.testing.assert_allclose(slope, np.cos(x.astype(float)), rtol=0, atol=1e-6)


def test_a_user_function_that_upcasts_keeps_the_input_dtype():
    sigma = Activation.from_callable(
        lambda x: np.tanh(x.astype(np.float64)), lambda x: 1 - np.tanh(x.astype(np.float64)) ** 2
    )
    x = np.linspace(-2, 2, 5, dtype=np.float32)
    assert sigma(x).dtype == np.float32
    assert sigma.derivative(x).dtype == np.float32


def test_a_named_derivative_is_used_as_given():
    # d/dx exp = exp, bit for bit; a central difference would differ in the last digits.
    sigma = get_activation("py:numpy:exp:exp")
    x = np.linspace(-2, 2, 9)
    np.testing.assert_array_equal(sigma.derivative(x), np.exp(x))


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_fused_passes_agree_with_sigma_and_its_derivative_at_the_kinks(name):
    sigma = get_activation(name)
    x = np.array([-1.5, -0.0, 0.0, 1e-300, 2.0])
    value, slope = sigma.value_and_derivative(x)
    np.testing.assert_array_equal(value, sigma(x))
    np.testing.assert_array_equal(slope, sigma.derivative(x))
    if name == "relu":
        np.testing.assert_array_equal(slope, [0.0, 0.0, 0.0, 1.0, 1.0])  # σ'(0) = 0


@pytest.mark.parametrize("spec, slope", [("leaky_relu", 0.01), ("leaky_relu(0.3)", 0.3)])
def test_leaky_relu_hermite_coefficients_are_the_closed_form(spec, slope):
    # σ = s x + (1 − s) relu(x); E[relu(g) He_n(g)] = φ(0) He_{n−2}(0) for n ≥ 2, with
    # He_0(0), He_2(0), He_4(0) = 1, −1, 3 and the odd ones 0; μ_0(relu) = φ(0), μ_1 = 1/2.
    relu = np.array([PHI0, 0.5, PHI0, 0.0, -PHI0, 0.0, 3 * PHI0])
    expected = (1 - slope) * relu
    expected[1] += slope
    mu = get_activation(spec).hermite_coefficients(6)
    np.testing.assert_allclose(mu, expected, rtol=0, atol=1e-11)
    assert get_activation(spec).kinks == (0.0,)


def test_names_of_built_activations():
    assert get_activation("He3").name == "He3"
    assert get_activation("leaky_relu(0.25)").name == "leaky_relu(0.25)"
    assert get_activation("poly(0, 1, 0.5)").name == "poly(0, 1, 0.5)"
    assert Activation.from_callable(np.sin, name="mine").name == "mine"
    assert Activation.from_callable(np.sin).name == "sin"
    # A callable without a __name__ is "custom".
    assert Activation.from_callable(functools.partial(np.multiply, 2.0)).name == "custom"


def test_a_constant_polynomial_has_zero_derivative():
    sigma = get_activation("poly(3)")
    x = np.linspace(-1, 1, 4)
    np.testing.assert_array_equal(sigma(x), np.full(4, 3.0))
    np.testing.assert_array_equal(sigma.derivative(x), np.zeros(4))


def test_the_degree_of_he_k_is_named_in_its_error():
    with pytest.raises(ValueError, match=r"the degree of the activation He<k> 100000 is above"):
        get_activation("He100000")


def test_user_function_failures_name_the_function_and_what_happened():
    def boom(x):
        raise ZeroDivisionError("nope")

    with pytest.raises(
        UserFunctionError,
        match=r"^activation boom: raised ZeroDivisionError on a float64 array of shape \(3, 4\)",
    ):
        Activation.from_callable(boom)
    with pytest.raises(
        UserFunctionError, match=r"^activation s: its derivative raised ZeroDivisionError"
    ):
        Activation.from_callable(np.sin, boom, name="s")
    with pytest.raises(UserFunctionError, match=r"^activation boom: raised ZeroDivisionError"):
        Activation.from_callable(boom, np.cos)
    with pytest.raises(UserFunctionError, match=r"^activation x: 3 is not callable"):
        Activation.from_callable(3, name="x")
    with pytest.raises(UserFunctionError, match=r"^activation s: 3 is not callable"):
        Activation.from_callable(np.sin, 3, name="s")
    # A scalar is not an array of the input's shape: the message says what came back.
    with pytest.raises(UserFunctionError, match=r"^activation one: did not .* returned a float\)"):
        Activation.from_callable(lambda x: 1.0, name="one")


def test_a_user_function_of_the_wrong_shape_or_kind_is_refused():
    class Unconvertible:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("no array")

    cases = {
        "summed": lambda x: x.sum(axis=0),  # numeric, wrong shape
        "strings": lambda x: np.full(x.shape, "a"),  # right shape, not numeric
        "opaque": lambda x: Unconvertible(),  # not convertible at all
    }
    for name, function in cases.items():
        with pytest.raises(UserFunctionError, match=f"^activation {name}: did not return"):
            Activation.from_callable(function, name=name)


def test_the_probe_does_not_warn_for_a_function_of_a_half_line():
    # The probe runs on [-2, 2]: log is valid where the caller uses it, so no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sigma = Activation.from_callable(np.log, np.reciprocal, name="log")
    np.testing.assert_allclose(sigma(np.array([1.0, np.e])), [0.0, 1.0])


def test_a_failure_mid_run_names_the_function_and_the_error():
    def small_only(x):
        if x.size > 12:
            raise RuntimeError("too big")
        return np.sin(x)

    for sigma, method in [
        (Activation.from_callable(small_only, np.cos, name="f"), "__call__"),
        (Activation.from_callable(np.sin, small_only, name="f"), "derivative"),
    ]:
        with pytest.raises(UserFunctionError, match=r"^activation f: failed on .*RuntimeError"):
            getattr(sigma, method)(np.zeros((5, 5)))


def test_long_specs_are_shortened_to_sixty_characters_in_messages():
    for length in (60, 61, 100):
        spec = "q" * length
        with pytest.raises(ValueError) as error:
            get_activation(spec)
        shown = str(error.value).split("'")[1]
        assert shown == (spec if length <= 60 else "q" * 57 + "...")


def test_the_spec_length_limit_is_inclusive_and_a_spec_must_be_a_string():
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("q" * MAX_SPEC_LENGTH)
    with pytest.raises(ValueError, match="MAX_SPEC_LENGTH"):
        get_activation("q" * (MAX_SPEC_LENGTH + 1))
    with pytest.raises(ValueError, match="named by a string, got int"):
        get_activation(3)


def test_python_activations_are_refused_without_the_opt_in():
    with pytest.raises(ValueError, match=r"--allow-python .* allow_python=True"):
        check_activation("py:numpy:tanh")
    assert check_activation(" py:numpy:tanh ", allow_python=True) == "py:numpy:tanh"


@pytest.mark.parametrize("k", [0, 1, 7, 20, 60, 128])
def test_hermite_coefficients_of_he_k_are_exact_at_every_degree(k):
    """μ_j(He_k) = k! δ_jk, to the last bit: quadrature lost them in rounding from k ≈ 20 on
    (He20 had μ_1..μ_6 ≠ 0, He128 μ_1 = 8e89, μ_128 = 1.6e215 for 128! = 3.9e215)."""
    mu = get_activation(f"He{k}").hermite_coefficients(128)
    want = np.zeros(129)
    want[k] = float(math.factorial(k))
    np.testing.assert_array_equal(mu, want)


def test_hermite_coefficients_of_polynomials_are_exact_and_agree_with_quadrature():
    """poly(...) and linear: μ_j = j! b_j of the Hermite series, zero above the degree; at low
    degree, where quadrature is accurate, the two agree."""
    from giantstep.hermite import coefficients

    poly = get_activation("poly(1, 2, 3)")
    np.testing.assert_array_equal(poly.hermite_coefficients(5), [4.0, 2.0, 6.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(get_activation("linear").hermite_coefficients(40)[:3], [0, 1, 0])
    assert not get_activation("linear").hermite_coefficients(40)[2:].any()
    for spec in ("poly(0.5, -1, 0.25, 2, -0.125)", "He5", "linear"):
        activation = get_activation(spec)
        exact = activation.hermite_coefficients(8)
        np.testing.assert_allclose(coefficients(activation.function, 8), exact, atol=1e-10)


def test_a_user_function_that_calls_sys_exit_is_named_not_obeyed():
    """A py: activation calling sys.exit made giantstep exit with its code and no message."""
    import sys

    with pytest.raises(UserFunctionError, match="raised SystemExit .*: 5"):
        Activation.from_callable(lambda x: sys.exit(5), name="quits")


@pytest.mark.parametrize("name", ["He2", "relu", "tanh"])
def test_a_bad_max_degree_is_named_by_the_coefficients_and_their_rounding(name):
    """Both methods name the argument the caller passed, for a polynomial σ (exact
    coefficients, zero rounding) as for the others."""
    activation = get_activation(name)
    for method in (activation.hermite_coefficients, activation.hermite_rounding):
        with pytest.raises(ValueError, match=r"^max_degree must be >= 0, got -1$"):
            method(-1)
        with pytest.raises(ValueError, match=r"^max_degree must be an integer"):
            method(2.5)
