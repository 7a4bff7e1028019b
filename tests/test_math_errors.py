"""The error theory's numerics against the mathematics (THEORY-ERRORS.md §1–3): Gaussian
integrals against closed forms and an independent integrator, and the ridge equations against
their limits, their fixed-point identities and hand-built cases.

Complements test_error_theory.py (THEORY-ERRORS.md §5's checks); each test here asserts a fact
of the mathematics that the module's numerics must reproduce.
"""

import math

import numpy as np
import pytest
from scipy import integrate, special

from giantstep.activations import Activation, get_activation
from giantstep.targets import parse_target
from giantstep.theory import errors
from giantstep.theory.errors import (
    ResidualStatistics,
    SpikedFeatures,
    TargetMoments,
    predicted_features,
    random_features_errors,
    ridge_kappa,
    solve_fixed_point,
    solve_fluctuations,
    spectral_ridge_errors,
    spiked_errors,
    trained_layer_features,
)
from giantstep.theory.gaussian import (
    activation_constants,
    activation_moments,
    gaussian_moments,
    neuron_constants,
    spike_rule,
)

PHI0 = 1 / math.sqrt(2 * math.pi)


def pdf(x):
    return np.exp(-np.square(x) / 2) * PHI0


def adaptive(f, points=()):
    """``E f(g)``, g ~ N(0, 1), by adaptive quadrature (split at points): independent of the
    module's fixed rules."""
    value, _ = integrate.quad(
        lambda g: f(g) * math.exp(-g * g / 2) * PHI0,
        -40,
        40,
        points=tuple(points) or None,
        epsabs=1e-14,
        epsrel=1e-14,
        limit=500,
    )
    return value


def shifted_relu(kink):
    """``relu(x − k)`` with its kink at k (not a panel edge of the fixed rules)."""
    return Activation.from_callable(
        lambda x: np.maximum(x - kink, 0.0),
        lambda x: (x > kink).astype(float),
        name=f"relu(x - {kink})",
        kinks=(kink,),
    )


# ---------------------------------------------------------------------------------------------
# giantstep.theory.gaussian: E f(m + c g), E[f(m + c g) g], E f(m + c g)²
# ---------------------------------------------------------------------------------------------


def abs_moments(m, c):
    """|X|, X = m + c g: E|X| = c√(2/π) e^{−a²/2} + m(1 − 2Φ(−a)) with a = m/c; Stein:
    E[|X| g] = c E sign X = c(2Φ(a) − 1); E X² = m² + c²."""
    a = m / c
    mean = c * 2 * pdf(a) + m * (1 - 2 * special.ndtr(-a))
    return mean, c * (2 * special.ndtr(a) - 1), m * m + c * c


def test_split_quadrature_integrates_both_sides_of_a_kink():
    # |x| is non-zero on both sides of its kink (relu is zero on one, and hides a lost piece).
    m, c = np.meshgrid(np.linspace(-4, 4, 17), np.array([0.3, 0.8, 1.0, 2.5]))
    moments = gaussian_moments(np.abs, m, c, (0.0,))
    for got, want in zip(
        (moments.mean, moments.cross, moments.second), abs_moments(m, c), strict=True
    ):
        assert got.shape == m.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shift", [-300.0, -40.0, 40.0, 300.0])
def test_a_kink_far_outside_the_bulk_of_the_gaussian(shift):
    # (0 − m)/c far beyond ±11: |m + g| = sign(m)(m + g) on all the mass.
    moments = gaussian_moments(np.abs, shift, 1.0, (0.0,))
    assert moments.mean == pytest.approx(abs(shift), rel=1e-13)
    assert moments.cross == pytest.approx(math.copysign(1.0, shift), rel=1e-12)
    assert moments.second == pytest.approx(shift * shift + 1, rel=1e-13)


def test_two_kinks_given_in_any_order():
    # clip(x, −1, 1) = x − relu(x − 1) + relu(−x − 1): the relu closed forms give the mean;
    # Stein gives the cross moment c·P(|X| < 1); the second moment by adaptive quadrature.
    def relu_mean(m, c):
        return m * special.ndtr(m / c) + c * pdf(m / c)

    shifts = np.array([-2.0, -0.7, 0.0, 0.4, 1.5, 3.0])
    scales = np.array([0.5, 1.0, 2.0, 0.7, 1.3, 0.9])

    def clip(x):
        return np.clip(x, -1.0, 1.0)

    mean = shifts - relu_mean(shifts - 1, scales) + relu_mean(-shifts - 1, scales)
    cross = scales * (special.ndtr((1 - shifts) / scales) - special.ndtr((-1 - shifts) / scales))
    for kinks in ((-1.0, 1.0), (1.0, -1.0)):
        moments = gaussian_moments(clip, shifts, scales, kinks)
        np.testing.assert_allclose(moments.mean, mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(moments.cross, cross, rtol=1e-12, atol=1e-14)
        for k, (m, c) in enumerate(zip(shifts, scales, strict=True)):
            second = adaptive(lambda g, m=m, c=c: clip(m + c * g) ** 2, ((-1 - m) / c, (1 - m) / c))
            assert moments.second[k] == pytest.approx(second, rel=1e-12, abs=1e-14)


def test_polynomial_moments_are_exact():
    # (m + c g)³: E = m³ + 3mc², E[· g] = 3c(m² + c²) (Stein), E (·)² = E X⁶ with the
    # moments of N(m, c²): m⁶ + 15m⁴c² + 45m²c⁴ + 15c⁶.
    m = np.array([-1.5, 0.0, 0.5, 2.0])
    c = np.array([0.5, 1.0, 2.0, 1.5])
    moments = gaussian_moments(lambda x: x**3, m, c)
    np.testing.assert_allclose(moments.mean, m**3 + 3 * m * c * c, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(moments.cross, 3 * c * (m * m + c * c), rtol=1e-13)
    sixth = m**6 + 15 * m**4 * c**2 + 45 * m**2 * c**4 + 15 * c**6
    np.testing.assert_allclose(moments.second, sixth, rtol=1e-13)


def test_an_exponential_reaches_far_into_the_tail():
    # E e^{c g} = e^{c²/2}: at c = 4 the integrand peaks at g = 4 and its mass beyond ±11 is
    # Φ(−7) ≈ 1e-12 of it, so the rule's span (±11) must be at least that.
    moments = gaussian_moments(np.exp, 0.0, np.array([1.0, 2.0, 4.0]))
    c = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(moments.mean, np.exp(c * c / 2), rtol=1e-10)
    np.testing.assert_allclose(moments.cross, c * np.exp(c * c / 2), rtol=1e-10)


def test_zero_scale_is_the_function_at_the_shift():
    m = np.array([[-2.0, 0.5], [1.0, 3.0]])
    c = np.array([[0.0, 1.0], [0.0, 0.0]])
    moments = gaussian_moments(np.abs, m, c, (0.0,))
    closed = abs_moments(np.array(0.5), np.array(1.0))
    np.testing.assert_allclose(moments.mean, [[2.0, closed[0]], [1.0, 3.0]], rtol=1e-13)
    np.testing.assert_allclose(moments.cross, [[0.0, closed[1]], [0.0, 0.0]], atol=1e-14)
    np.testing.assert_allclose(moments.second, [[4.0, 1.25], [1.0, 9.0]], rtol=1e-13)
    # Broadcasting a scalar scale against the shifts, and the relu closed form at c = 0.
    relu = gaussian_moments(lambda x: np.maximum(x, 0), m[0], 0.0, closed_form="relu")
    np.testing.assert_array_equal(relu.mean, [0.0, 0.5])
    np.testing.assert_array_equal(relu.second, [0.0, 0.25])


def test_relu_moments_hold_far_in_the_tail():
    # X ~ N(m, 1), m = −30: E relu(X) = φ(30) − 30Φ(−30) ≈ φ(30)/30² (Mills ratio), tiny but
    # positive; the closed forms keep it where a quadrature on ±11 sees only zeros.
    relu = get_activation("relu")
    moments = activation_moments(relu, np.array([-30.0, -12.0]), 1.0)
    for k, a in enumerate((30.0, 12.0)):
        # Φ(−a) = φ(a)/a · (1 − 1/a² + 3/a⁴ − 15/a⁶ …), so φ(a) − aΦ(−a) is the series below,
        # with error ~105/a⁶.
        mills = pdf(a) / a**2 * (1 - 3 / a**2 + 15 / a**4)
        # abs=0: approx's default absolute tolerance (1e-12) would accept 0 for these.
        assert moments.mean[k] == pytest.approx(mills, rel=10 * 105 / a**6, abs=0)
        assert moments.cross[k] == pytest.approx(special.ndtr(-a), rel=1e-12, abs=0)


def test_single_precision_inputs_are_read_as_the_numbers_they_are():
    # The moments depend on the values of m and c (and f), not on how they are stored: float32
    # inputs give the moments of their exact float64 values, in double precision.
    m32 = np.array([-0.7, 0.3, 1.9], dtype=np.float32)
    c32 = np.array([0.3, 1.1, 2.7], dtype=np.float32)
    m64, c64 = m32.astype(float), c32.astype(float)
    relu = get_activation("relu")
    for shift, scale in [(m32, c64), (m64, c32), (m32, c32)]:
        single = activation_moments(relu, shift, scale)
        double = activation_moments(relu, m64, c64)
        for got, want in [(single.mean, double.mean), (single.cross, double.cross)]:
            np.testing.assert_allclose(got, want, rtol=1e-15)
        np.testing.assert_allclose(single.second, double.second, rtol=1e-15)
    at_zero = gaussian_moments(np.exp, m32, np.float32(0.0))
    np.testing.assert_allclose(at_zero.mean, np.exp(m64), rtol=1e-15)
    # f in single precision: E f(m)² is the square of its value, not of a float32 product.
    values = (np.float32(0.1) * m32).astype(np.float64)

    def single_f(x):
        return (np.float32(0.1) * x.astype(np.float32)).astype(np.float32)

    at_zero = gaussian_moments(single_f, m64, 0.0)
    np.testing.assert_array_equal(at_zero.mean, values)
    np.testing.assert_allclose(at_zero.second, values * values, rtol=1e-16)
    constants = neuron_constants(relu, c32)
    reference = neuron_constants(relu, c64)
    for name in ("mean", "slope", "curvature", "nonlinear", "slope_variance"):
        np.testing.assert_allclose(getattr(constants, name), getattr(reference, name), rtol=1e-15)


def test_gaussian_moments_refuse_what_they_cannot_integrate():
    for shift, scale in [(0.0, -1.0), (np.nan, 1.0), (0.0, np.inf), (np.inf, 1.0)]:
        with pytest.raises(ValueError, match="finite shifts and scales"):
            gaussian_moments(np.abs, shift, scale)
    with pytest.raises(ValueError, match="no closed form for 'tanh'"):
        gaussian_moments(np.tanh, 0.0, 1.0, closed_form="tanh")


def test_activation_moments_use_the_activations_kinks():
    sigma = shifted_relu(0.3)
    m, c = np.array([-1.0, 0.2, 1.0]), np.array([0.5, 1.0, 2.0])
    moments = activation_moments(sigma, m, c)
    # relu(X − k) with X − k ~ N(m − k, c²): the relu closed forms at shift m − k.
    exact = gaussian_moments(lambda x: np.maximum(x, 0), m - 0.3, c, closed_form="relu")
    for got, want in [
        (moments.mean, exact.mean),
        (moments.cross, exact.cross),
        (moments.second, exact.second),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def shifted_relu_constants(a):
    """relu(g − a): μ0 = φ(a) − aΦ(−a), μ1 = Φ(−a), μ2 = E σ″ = φ(a), μ3 = E σ‴ = aφ(a),
    E σ² = (1 + a²)Φ(−a) − aφ(a), E σ′² = Φ(−a)."""
    upper = special.ndtr(-a)
    mu = np.array([pdf(a) - a * upper, upper, pdf(a), a * pdf(a)])
    return mu, (1 + a * a) * upper - a * pdf(a), upper


def test_activation_constants_split_at_a_kink_off_the_panel_edges():
    a = 0.3
    constants = activation_constants(shifted_relu(a))
    mu, second, slope_second = shifted_relu_constants(a)
    np.testing.assert_allclose(constants.mu, mu, atol=1e-12)
    assert constants.second_moment == pytest.approx(second, abs=1e-12)
    assert constants.nonlinear == pytest.approx(second - mu[0] ** 2 - mu[1] ** 2, abs=1e-12)
    assert constants.slope_variance == pytest.approx(slope_second - mu[1] ** 2, abs=1e-12)


def test_neuron_constants_of_a_kink_seen_through_the_row_norm():
    # σ(‖w‖g) = ‖w‖ relu(g − k/‖w‖) for σ = relu(x − k): mean ‖w‖μ0(a), E σ′ = Φ(−a),
    # E σ″ = φ(a)/‖w‖, Var σ′ = Φ(−a)(1 − Φ(−a)), μ*² = ‖w‖²(E relu² − μ0² − μ1²) at a = k/‖w‖.
    kink = 0.3
    norms = np.array([0.6, 1.0, 1.7, 1.0, 0.6 + 1e-15])
    constants = neuron_constants(shifted_relu(kink), norms)
    a = kink / norms
    mu, second, _ = shifted_relu_constants(a)
    np.testing.assert_allclose(constants.mean, norms * mu[0], rtol=1e-12)
    np.testing.assert_allclose(constants.slope, mu[1], rtol=1e-12)
    np.testing.assert_allclose(constants.curvature, mu[2] / norms, rtol=1e-12)
    np.testing.assert_allclose(constants.slope_variance, mu[1] * (1 - mu[1]), rtol=1e-12)
    np.testing.assert_allclose(
        constants.nonlinear, norms**2 * (second - mu[0] ** 2 - mu[1] ** 2), rtol=1e-11
    )


def test_neuron_constants_of_a_smooth_activation_at_any_norm():
    # softplus(‖w‖g) by adaptive quadrature: E σ, E σ′, E σ″ (= E[σ He2(g)]/‖w‖², Stein twice),
    # Var σ′ and μ*² = E σ² − (E σ)² − ‖w‖² (E σ′)².
    softplus = Activation.from_callable(
        lambda x: np.logaddexp(0.0, x), special.expit, name="softplus"
    )
    norms = np.array([0.5, 2.0])
    constants = neuron_constants(softplus, norms)
    for j, norm in enumerate(norms):
        mean = adaptive(lambda g, s=norm: np.logaddexp(0.0, s * g))
        slope = adaptive(lambda g, s=norm: special.expit(s * g))
        curvature = adaptive(lambda g, s=norm: special.expit(s * g) * special.expit(-s * g))
        slope_second = adaptive(lambda g, s=norm: special.expit(s * g) ** 2)
        second = adaptive(lambda g, s=norm: np.logaddexp(0.0, s * g) ** 2)
        assert constants.mean[j] == pytest.approx(mean, rel=1e-12)
        assert constants.slope[j] == pytest.approx(slope, rel=1e-12)
        assert constants.curvature[j] == pytest.approx(curvature, rel=1e-11)
        assert constants.slope_variance[j] == pytest.approx(slope_second - slope**2, rel=1e-11)
        nonlinear = second - mean**2 - norm**2 * slope**2
        assert constants.nonlinear[j] == pytest.approx(nonlinear, rel=1e-10)


def test_neuron_constants_need_positive_norms():
    for norms in ([1.0, 0.0], [-1.0]):
        with pytest.raises(ValueError, match="positive norm"):
            neuron_constants(shifted_relu(0.0), np.array(norms))


def test_spike_rule_is_gauss_hermite_for_smooth_integrands():
    for count in (1, 5, 31):
        s, w = spike_rule(count)
        assert len(s) == count and w.sum() == pytest.approx(1.0, rel=1e-14)
        # Exact for polynomials of degree ≤ 2Q − 1: E s² = 1, E s⁴ = 3, E s⁶ = 15.
        for degree, moment in [(2, 1.0), (4, 3.0), (6, 15.0)]:
            if degree <= 2 * count - 1:
                assert w @ s**degree == pytest.approx(moment, rel=1e-12)
    # A kinked target seen through a large sine stays smooth in s: the Gauss–Hermite rule.
    s, w = spike_rule(31, (0.0,), cosine=0.5, sine=0.8)
    reference = np.polynomial.hermite_e.hermegauss(31)[0]
    np.testing.assert_array_equal(s, reference)
    with pytest.raises(ValueError, match="at least one node, got 0"):
        spike_rule(0)


def test_spike_rule_splits_at_the_kink_of_a_target_seen_almost_along_the_spike():
    # y ≈ relu(γ s − k) when ρ is small: kinked in s at k/γ, which Gauss–Hermite cannot
    # integrate to 1e-12; E relu(γ s − k) = γ(φ(a) − aΦ(−a)), a = k/γ.
    gamma, kink = 0.99, 0.5
    s, w = spike_rule(31, (kink,), cosine=gamma, sine=0.1)
    assert w.sum() == pytest.approx(1.0, rel=1e-14)
    a = kink / gamma
    expected = gamma * (pdf(a) - a * special.ndtr(-a))
    assert w @ np.maximum(gamma * s - kink, 0) == pytest.approx(expected, rel=1e-12)
    plain, weights = np.polynomial.hermite_e.hermegauss(31)
    plain_value = weights @ np.maximum(gamma * plain - kink, 0) / weights.sum()
    assert abs(plain_value - expected) > 1e-6  # the case the split rule is for
    assert abs(w.sum() - 1) < 4e-16  # normalised exactly, not only up to the tail beyond ±8
    # The integrands are Gaussian convolutions of the kink, of width ρ in s: the rule resolves
    # E_s h(s) = E relu(γs + ρz − k) = φ(k) − kΦ(−k), h(s) = ρφ(u/ρ) + uΦ(u/ρ), u = γs − k.
    for rho, tolerance in [(0.2, 1e-10), (0.1, 1e-7)]:
        gamma = math.sqrt(1 - rho * rho)
        for kink in (0.0, 0.5):
            nodes, weights = spike_rule(31, (kink,), cosine=gamma, sine=rho)
            u = gamma * nodes - kink
            smooth = rho * pdf(u / rho) + u * special.ndtr(u / rho)
            exact = pdf(kink) - kink * special.ndtr(-kink)
            assert weights @ smooth == pytest.approx(exact, rel=tolerance)
    # The split rule costs a few times Q nodes (the solver's work grows with them).
    assert 31 < len(s) < 256
    # Exactly along the spike (ρ = 0): y = relu(s − k) itself is kinked in s.
    s, w = spike_rule(31, (kink,), cosine=1.0, sine=0.0)
    expected = pdf(kink) - kink * special.ndtr(-kink)
    assert w @ np.maximum(s - kink, 0) == pytest.approx(expected, rel=1e-12)
    # Without a cosine the target does not depend on s (y = σ*(ρz)): the smooth rule.
    s, _ = spike_rule(31, (kink,), sine=0.1)
    np.testing.assert_array_equal(s, plain)


# ---------------------------------------------------------------------------------------------
# giantstep.theory.errors, level 1: the deterministic equivalent of ridge (§2)
# ---------------------------------------------------------------------------------------------


def spectrum(rng, size, zeros=0):
    e = rng.uniform(0.2, 2.0, size)
    e[:zeros] = 0.0
    return e


def test_kappa_solves_its_equation_for_any_spectrum():
    rng = np.random.default_rng(11)
    e = spectrum(rng, 120, zeros=10)
    samples, ridges = np.array([30.0, 120.0, 500.0]), np.array([1e-6, 1e-2, 1.0, 30.0])
    kappa = ridge_kappa(e, samples, ridges)
    assert kappa.shape == (3, 4)
    n, lam = samples[:, None], ridges[None, :]
    right = kappa / n * np.sum(e / (e + kappa[..., None]), axis=-1)
    np.testing.assert_allclose(kappa - lam, right, rtol=1e-13)
    assert np.all(kappa > lam)


def test_kappa_of_a_single_eigenvalue_is_a_quadratic_root():
    # One feature of variance e: κ − λ = (κ/n) e/(e + κ) ⇔ κ² + κ(e − λ − e/n) − λe = 0.
    e, n, lam = 2.0, np.array([0.5, 1.0, 3.0]), np.array([1e-3, 0.4])
    kappa = ridge_kappa(np.array([e]), n, lam)
    b = e - lam[None, :] - e / n[:, None]
    np.testing.assert_allclose(kappa, (-b + np.sqrt(b * b + 4 * lam[None, :] * e)) / 2, rtol=1e-13)


def test_ridgeless_underparameterised_limit_is_the_noise_times_n_over_n_minus_p():
    # λ → 0 with n > N: κ → 0, the fit is unbiased and E_test = σ_eff² n/(n − N) with
    # σ_eff² = E y² − Σ p_i²/e_i; E_train = (λ/κ)² E_test → σ_eff² (n − N)/n.
    rng = np.random.default_rng(12)
    e = spectrum(rng, 50)
    p = rng.standard_normal(50) * np.sqrt(e)
    second = float(np.sum(p * p / e)) + 0.3
    samples = np.array([80.0, 200.0])
    curve = spectral_ridge_errors(e, p, second, samples, 1e-11)
    np.testing.assert_allclose(curve.test[:, 0], 0.3 * samples / (samples - 50), rtol=1e-8)
    np.testing.assert_allclose(curve.train[:, 0], 0.3 * (samples - 50) / samples, rtol=1e-8)


def test_ridgeless_overparameterised_isotropic_errors():
    # Σ = I_N, n < N, λ → 0: κ → N/n − 1, bias ‖p‖²(1 − n/N), E_test = bias + σ_eff²/(1 − n/N).
    rng = np.random.default_rng(13)
    width, noise = 100, 0.25
    p = rng.standard_normal(width) * 0.1
    second = float(p @ p) + noise
    samples = np.array([20.0, 50.0, 80.0])
    curve = spectral_ridge_errors(np.ones(width), p, second, samples, 1e-12)
    ratio = samples / width
    expected = float(p @ p) * (1 - ratio) + noise / (1 - ratio)
    np.testing.assert_allclose(curve.test[:, 0], expected, rtol=1e-9)


def test_infinite_data_leaves_the_population_ridge_error():
    # n → ∞: κ → λ, df2/n → 0, E_test → E y² − Σ p_i²(e_i + 2λ)/(e_i + λ)², the population
    # risk of the ridge solution (Σ + λ)⁻¹Φ; at λ → 0 it is σ_eff².
    rng = np.random.default_rng(14)
    e = spectrum(rng, 40)
    p = rng.standard_normal(40) * np.sqrt(e)
    second = float(np.sum(p * p / e)) + 0.5
    ridges = np.array([1e-9, 0.3, 2.0])
    curve = spectral_ridge_errors(e, p, second, 1e13, ridges)
    theta = p[None, :] / (e[None, :] + ridges[:, None])  # ridge solution in the eigenbasis
    population = second - 2 * theta @ p + (theta * theta) @ e
    np.testing.assert_allclose(curve.test[0], population, rtol=1e-9)
    assert curve.test[0, 0] == pytest.approx(0.5, rel=1e-7)


def test_the_deterministic_equivalent_matches_simulated_ridge_on_gaussian_covariates():
    # x ~ N(0, diag e), y = θᵀx + ε: ridge (1/n)‖y − Xa‖² + λ‖a‖² simulated and averaged over
    # seeds; test error (a − θ)ᵀΣ(a − θ) + σ² exactly, training error on the ridge set.
    # At N = 200, n = 4N, 40 seeds: standard error ~0.5 %, theory − simulation −0.7 … +0.2 %.
    width, samples, noise = 200, 800, 0.4
    rng = np.random.default_rng(15)
    e = rng.uniform(0.2, 2.0, width)
    theta = rng.standard_normal(width) / np.sqrt(width)
    ridges = np.array([1e-3, 0.1])
    curve = spectral_ridge_errors(
        e, e * theta, float(theta @ (e * theta)) + noise**2, samples, ridges
    )
    test, train = np.zeros(2), np.zeros(2)
    seeds = 40
    for seed in range(seeds):
        draw = np.random.default_rng(100 + seed)
        x = draw.standard_normal((samples, width)) * np.sqrt(e)
        y = x @ theta + noise * draw.standard_normal(samples)
        for k, lam in enumerate(ridges):
            a = np.linalg.solve(x.T @ x / samples + lam * np.eye(width), x.T @ y / samples)
            test[k] += ((a - theta) ** 2 @ e + noise**2) / seeds
            train[k] += np.mean((y - x @ a) ** 2) / seeds
    np.testing.assert_allclose(curve.test[0], test, rtol=0.025)
    np.testing.assert_allclose(curve.train[0], train, rtol=0.025)


def test_the_grid_refuses_what_is_not_a_ridge_problem():
    e, p = np.ones(4), np.zeros(4)
    for samples, ridges in [
        ([], 0.1), (10, []), ([[10]], 0.1), (10, [[0.1]]), (0, 0.1), (10, 0.0),
        (-5, 0.1), (10, -1.0), (np.inf, 0.1), (10, np.nan),
    ]:  # fmt: skip
        with pytest.raises(ValueError) as err:
            spectral_ridge_errors(e, p, 1.0, samples, ridges)
        assert str(err.value) in (
            "samples and ridges must be non-empty numbers or 1-D sequences",
            "the ridge-set sizes and the ridge values must be finite and positive",
        )
    curve = spectral_ridge_errors(e, p, 1.0, [10, 20], [0.1, 1.0, 10.0])
    assert curve.test.shape == curve.train.shape == (2, 3)
    np.testing.assert_array_equal(curve.samples, [10.0, 20.0])
    np.testing.assert_array_equal(curve.ridges, [0.1, 1.0, 10.0])
    # Whole numbers are read as float64 sizes and ridges; one sample is a ridge problem too.
    whole = spectral_ridge_errors(e, p, 1.0, [1, 20], [1, 10])
    assert whole.samples.dtype == whole.ridges.dtype == np.float64
    assert np.isfinite(whole.test).all()


def test_random_features_assemble_the_gaussian_equivalent_covariance():
    # §2 with per-neuron constants (relu at row norm ρ_j: mean ρ_jφ(0), E σ′ = 1/2,
    # E σ″ = φ(0)/ρ_j, μ*² = ρ_j²(1/2 − 1/2π − 1/4)): Σ = μ0μ0ᵀ + D1WWᵀD1 + diag μ*² plus
    # the second Mehler term ½ D2 (WWᵀ)^{∘2} D2 off the diagonal, Φ = E[g*]μ0 + D1W W*ᵀC1,
    # then the spectral formulas.
    rng = np.random.default_rng(16)
    width, dim = 40, 30
    w = rng.standard_normal((width, dim)) / np.sqrt(dim) * rng.uniform(0.5, 1.5, (width, 1))
    norms = np.linalg.norm(w, axis=1)
    directions = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
    target = parse_target("relu(z1) + 0.5*z2")
    mean = norms * PHI0
    slope = np.full(width, 0.5)
    nonlinear = norms**2 * (0.5 - 1 / (2 * math.pi) - 0.25)
    sigma = np.outer(mean, mean) + (slope[:, None] * w) @ (slope[:, None] * w).T
    sigma += np.diag(nonlinear)
    curvature = PHI0 / norms
    mehler = 0.5 * np.outer(curvature, curvature) * (w @ w.T) ** 2
    sigma += mehler - np.diag(np.diag(mehler))
    target_mean, linear = PHI0, np.array([0.5, 0.5])  # E relu, E[g* z_i]
    second = 0.5 + 0.25 + 0.09  # E relu² + 0.5² E z2² + σ_ε²
    cross = target_mean * mean + slope * (w @ (directions.T @ linear))
    values, vectors = np.linalg.eigh(sigma)
    expected = spectral_ridge_errors(values, vectors.T @ cross, second, [50, 90], [1e-2, 1.0])
    relu = get_activation("relu")
    curve = random_features_errors(w, relu, target, directions, 0.3, [50, 90], [1e-2, 1.0])
    np.testing.assert_allclose(curve.test, expected.test, rtol=1e-9)
    np.testing.assert_allclose(curve.train, expected.train, rtol=1e-9)
    moments = TargetMoments.of(target, 0.3)
    assert moments.mean == pytest.approx(PHI0, abs=1e-12)
    np.testing.assert_allclose(moments.linear, linear, atol=1e-12)
    assert moments.second == pytest.approx(second, abs=1e-12)
    assert TargetMoments.of(target).second == pytest.approx(second - 0.09, abs=1e-12)
    # float32 layers and spectra are read as the float64 numbers they are, bit for bit.
    w32 = w.astype(np.float32)
    single = random_features_errors(w32, relu, target, directions, 0.3, [50, 90], [1e-2, 1.0])
    double = random_features_errors(
        w32.astype(np.float64), relu, target, directions, 0.3, [50, 90], [1e-2, 1.0]
    )
    np.testing.assert_array_equal(single.test, double.test)
    e32, p32 = values.astype(np.float32), (vectors.T @ cross).astype(np.float32)
    single = spectral_ridge_errors(e32, p32, second, [50, 90], [1e-2, 1.0])
    double = spectral_ridge_errors(
        e32.astype(float), p32.astype(float), second, [50, 90], [1e-2, 1.0]
    )
    np.testing.assert_array_equal(single.test, double.test)
    np.testing.assert_array_equal(
        ridge_kappa(e32, np.array([50.0]), np.array([1e-2])),
        ridge_kappa(e32.astype(float), np.array([50.0]), np.array([1e-2])),
    )


def test_negative_eigenvalues_count_as_zero():
    # A PSD spectrum's rounding can give e_i ≈ −1e-17; the theory reads them as 0.
    n, lam = np.array([30.0, 60.0]), np.array([1e-3, 1.0])
    found = ridge_kappa(np.array([-1e-3, 0.5, 1.0]), n, lam)
    np.testing.assert_array_equal(found, ridge_kappa(np.array([0.0, 0.5, 1.0]), n, lam))
    found = spectral_ridge_errors(np.array([-1e-3, 0.5, 1.0]), np.ones(3), 2.0, n, lam)
    expected = spectral_ridge_errors(np.array([0.0, 0.5, 1.0]), np.ones(3), 2.0, n, lam)
    np.testing.assert_array_equal(found.test, expected.test)


# ---------------------------------------------------------------------------------------------
# giantstep.theory.errors, levels 2–3: the layer after one step (§3.1, §3.4)
# ---------------------------------------------------------------------------------------------


def projector(v):
    return np.eye(len(v)) - np.outer(v, v)


def test_spiked_features_split_the_layer_along_the_spike_and_the_target():
    # W x = W_b Π_v x + (W_b v) s + r s: Ω = W_b Π_v W_bᵀ, m = W_b v, t = W_b b⊥ with
    # β = γv + ρb⊥; v and β are normalised first.
    rng = np.random.default_rng(21)
    bulk = rng.standard_normal((12, 9))
    spike = rng.standard_normal(12)
    v, beta = rng.standard_normal(9), rng.standard_normal(9)
    layer = SpikedFeatures.from_layer(bulk, spike, 3 * v, 2 * beta)
    v, beta = v / np.linalg.norm(v), beta / np.linalg.norm(beta)
    gamma = v @ beta
    orthogonal = (beta - gamma * v) / np.sqrt(1 - gamma**2)
    assert layer.cosine == pytest.approx(gamma, abs=1e-14)
    np.testing.assert_allclose(layer.bulk_gram, bulk @ projector(v) @ bulk.T, atol=1e-12)
    np.testing.assert_allclose(layer.bulk_along_spike, bulk @ v, atol=1e-12)
    np.testing.assert_allclose(layer.bulk_along_target, bulk @ orthogonal, atol=1e-12)
    # The default scale is the conditional standard deviation of h_j = (W_b Π_v x)_j.
    np.testing.assert_allclose(layer.bulk_scale, np.linalg.norm(bulk @ projector(v), axis=1))
    np.testing.assert_array_equal(layer.spike, spike)
    assert layer.width == 12
    # A spike along β: no orthogonal part (ρ = 0), and an explicit scale is kept.
    along = SpikedFeatures.from_layer(bulk, spike, -beta, beta, np.full(12, 0.5))
    assert along.cosine == -1.0
    np.testing.assert_array_equal(along.bulk_along_target, np.zeros(12))
    np.testing.assert_array_equal(along.bulk_scale, np.full(12, 0.5))


def test_a_spike_along_the_target_has_cosine_exactly_plus_or_minus_one():
    # v ∥ β: v·β of the normalised vectors is ±1 only to rounding (often ±(1 + 2e-16)); the
    # cosine is clipped to [−1, 1], so that ρ = √(1 − γ²) is real.
    rng = np.random.default_rng(25)
    for _ in range(20):
        beta = rng.standard_normal(5)
        for sign in (1.0, -1.0):
            v = sign * rng.uniform(0.5, 3.0) * beta
            layer = SpikedFeatures.from_layer(np.eye(5), np.ones(5), v, beta)
            assert -1.0 <= layer.cosine <= 1.0
            assert layer.cosine == pytest.approx(sign, abs=1e-15)


def test_the_default_scale_of_a_row_along_the_spike_is_zero_not_nan():
    # A bulk row parallel to v has ‖Π_v w‖² = ‖w‖² − (w·v)² = 0, often −1e-16 after rounding:
    # clipped at 0 before the square root. Short rows keep their own (small) scale.
    rng = np.random.default_rng(27)
    for _ in range(10):
        v = rng.standard_normal(9)
        bulk = np.outer(rng.uniform(0.5, 3.0, 4), v / np.linalg.norm(v))
        bulk[0] = 0.01 * rng.standard_normal(9)
        layer = SpikedFeatures.from_layer(bulk, np.ones(4), v, np.eye(9)[0])
        assert np.isfinite(layer.bulk_scale).all()
        np.testing.assert_allclose(layer.bulk_scale[1:], 0.0, atol=1e-7)
        norm = np.linalg.norm(bulk[0] - (bulk[0] @ v) * v / (v @ v))
        assert layer.bulk_scale[0] == pytest.approx(norm, rel=1e-12)


def test_single_precision_layers_are_read_as_the_numbers_they_are():
    # float32 inputs give the features of the same numbers in float64 (bit for bit).
    rng = np.random.default_rng(26)
    w0, eta = rng.standard_normal((12, 9)), rng.uniform(-1, 1, 12)
    beta, v = rng.standard_normal(9), rng.standard_normal(9)
    scale = rng.uniform(0.5, 1.5, 12)
    singles = [x.astype(np.float32) for x in (w0, eta, beta, v, scale)]
    doubles = [x.astype(np.float64) for x in singles]
    residual = ResidualStatistics(mean=0.1, second=1.4, linear=0.8, quadratic=0.5)
    relu = get_activation("relu")

    def features(w, e, b, direction, c):
        yield SpikedFeatures.from_layer(w, e, direction, b)
        yield SpikedFeatures.from_layer(w, e, direction, b, c)
        yield predicted_features(w, e, relu, residual, 40, b, np.random.default_rng(2))

    for single, double in zip(features(*singles), features(*doubles), strict=True):
        for name in ("spike", "bulk_gram", "bulk_scale", "bulk_along_spike", "bulk_along_target"):
            np.testing.assert_array_equal(getattr(single, name), getattr(double, name))
            assert getattr(single, name).dtype == np.float64
        assert single.cosine == double.cosine


def test_trained_layer_features_take_the_top_direction_of_the_update():
    rng = np.random.default_rng(22)
    w0 = rng.standard_normal((50, 30)) / np.sqrt(30)
    beta = np.eye(30)[0]
    v = -(0.6 * beta + 0.8 * np.eye(30)[1])  # the update's sign is arbitrary: γ ≥ 0 is chosen
    u = np.eye(30)[2]
    big, small = rng.standard_normal(50) * 3, rng.standard_normal(50) * 0.01
    small -= (small @ big) / (big @ big) * big  # orthogonal left factors: exact SVD
    w1 = w0 + np.outer(big, v) + np.outer(small, u)
    layer = trained_layer_features(w0, w1, beta)
    assert layer.cosine == pytest.approx(0.6, abs=1e-10)
    np.testing.assert_allclose(layer.spike, -big, rtol=1e-9)  # r_j = (W1 − W0)_j·(−v)
    bulk = w1 - np.outer(-big, -v)  # W_b = W1 − r vᵀ keeps W0's and the small update's parts
    np.testing.assert_allclose(layer.bulk_along_spike, bulk @ -v, atol=1e-10)
    np.testing.assert_allclose(layer.bulk_gram, bulk @ projector(v) @ bulk.T, atol=1e-10)
    # No update: no spike, v = β, the layer as it is.
    still = trained_layer_features(w0, w0.copy(), beta)
    np.testing.assert_array_equal(still.spike, np.zeros(50))
    assert still.cosine == 1.0
    np.testing.assert_allclose(still.bulk_gram, w0 @ projector(beta) @ w0.T, atol=1e-14)


def test_residual_statistics_of_the_built_in_target():
    # y = z + He2(z)/2 + ε: E y = 0, E y² = 1 + 1/2 + σ², μ1 = 1, μ2 = E[y He2] = 1; with an
    # offset f̄: E(y − f̄) = −f̄, E(y − f̄)² = E y² + f̄², the Hermite parts unchanged.
    target = parse_target("z1 + He2(z1)/2")
    plain = ResidualStatistics.of(target, 0.3)
    assert plain.mean == pytest.approx(0.0, abs=1e-12)
    assert plain.second == pytest.approx(1.59, abs=1e-12)
    assert plain.linear == pytest.approx(1.0, abs=1e-12)
    assert plain.quadratic == pytest.approx(1.0, abs=1e-12)
    shifted = ResidualStatistics.of(parse_target("relu(z1)"), 0.0, offset=0.25)
    # relu: E = φ(0), E relu² = 1/2, μ1 = 1/2, μ2 = φ(0).
    assert shifted.mean == pytest.approx(PHI0 - 0.25, abs=1e-12)
    assert shifted.second == pytest.approx(0.5 - 0.5 * PHI0 + 0.0625, abs=1e-12)
    assert shifted.linear == pytest.approx(0.5, abs=1e-12)
    assert shifted.quadratic == pytest.approx(PHI0, abs=1e-12)
    with pytest.raises(ValueError, match="rank-1 target, got rank 2"):
        ResidualStatistics.of(parse_target("z1 + z1*z2"))
    assert ResidualStatistics.of(target).second == pytest.approx(1.5, abs=1e-12)  # noiseless


@pytest.mark.parametrize("amplification", [True, False])
def test_predicted_features_follow_the_one_step_mapping(amplification):
    # §3.1 for relu (E σ′ = 1/2, E σ″ = φ(0)/‖w‖, Var σ′ = 1/4 at row norm ‖w‖), rows of
    # unequal norms: ‖ζ‖² = μ1(ỹ)² + E ỹ² d/n0, γ = μ1(ỹ)/‖ζ‖, r_j = η_j ‖ζ‖/2,
    # c_j² = (1 + η_j E ỹ φ(0)/‖w_j‖)² ‖w_j‖² + η_j² E ỹ² d/(4 n0),
    # W_b,j = (c_j/‖w_j‖) w_j + η_j (φ(0)/‖w_j‖) μ2(ỹ) (w_j·β) β.
    rng = np.random.default_rng(23)
    width, dim, batch = 30, 20, 50
    w0 = rng.standard_normal((width, dim)) / np.sqrt(dim)
    norms = np.linalg.norm(w0, axis=1)
    eta = rng.uniform(-1.5, 1.5, width)
    beta = np.zeros(dim)
    beta[3] = 1.0
    residual = ResidualStatistics(mean=-0.2, second=1.7, linear=0.9, quadratic=0.8)
    layer = predicted_features(
        w0, eta, get_activation("relu"), residual, batch, 2 * beta, np.random.default_rng(1),
        beta_amplification=amplification,
    )  # fmt: skip
    zeta = math.sqrt(0.81 + 1.7 * dim / batch)
    gamma, rho = 0.9 / zeta, math.sqrt(1 - 0.81 / zeta**2)
    scale = np.sqrt((1 - 0.2 * eta * PHI0 / norms) ** 2 * norms**2 + eta**2 * 1.7 * dim / batch / 4)
    bulk = (scale / norms)[:, None] * w0
    if amplification:
        bulk += np.outer(eta * PHI0 / norms * 0.8 * (w0 @ beta), beta)
    assert layer.cosine == pytest.approx(gamma, rel=1e-12)
    np.testing.assert_allclose(layer.spike, eta * zeta / 2, rtol=1e-12)
    np.testing.assert_allclose(layer.bulk_scale, scale, rtol=1e-12)
    # Independent of the random part u of v: Ω + m mᵀ = W_b W_bᵀ and W_b β = γ m + ρ t.
    gram = layer.bulk_gram + np.outer(layer.bulk_along_spike, layer.bulk_along_spike)
    np.testing.assert_allclose(gram, bulk @ bulk.T, atol=1e-12)
    along_beta = gamma * layer.bulk_along_spike + rho * layer.bulk_along_target
    np.testing.assert_allclose(along_beta, bulk @ beta, atol=1e-12)


def test_predicted_spike_direction_is_random_apart_from_its_cosine():
    # v = γβ + ρu with u ⊥ β drawn from the generator: two generators, two directions.
    rng = np.random.default_rng(24)
    w0 = rng.standard_normal((20, 15)) / np.sqrt(15)
    beta = np.eye(15)[0]
    residual = ResidualStatistics(mean=0.0, second=1.5, linear=1.0, quadratic=1.0)
    relu = get_activation("relu")
    layers = [
        predicted_features(w0, np.ones(20), relu, residual, 60, beta, np.random.default_rng(s))
        for s in (1, 1, 2)
    ]
    np.testing.assert_array_equal(layers[0].bulk_along_spike, layers[1].bulk_along_spike)
    assert not np.allclose(layers[0].bulk_along_spike, layers[2].bulk_along_spike)
    for layer in layers:
        assert layer.cosine == pytest.approx(1 / math.sqrt(1 + 1.5 * 15 / 60), rel=1e-14)
    # No signal in the residual (μ1(ỹ) = 0): γ = 0, the spike is u itself.
    blind = ResidualStatistics(mean=0.0, second=1.0, linear=0.0, quadratic=0.0)
    layer = predicted_features(w0, np.ones(20), relu, blind, 60, beta, np.random.default_rng(3))
    assert layer.cosine == 0.0
    # No residual at all (ζ = 0): no spike, and γ = 0 rather than 0/0.
    silent = ResidualStatistics(mean=0.0, second=0.0, linear=0.0, quadratic=0.0)
    layer = predicted_features(w0, np.ones(20), relu, silent, 60, beta, np.random.default_rng(3))
    assert layer.cosine == 0.0
    np.testing.assert_array_equal(layer.spike, np.zeros(20))
    # u is the generator's first normal vector of size d, made ⊥ β and unit (here v = u), and
    # with E ỹ = μ2(ỹ) = 0 the bulk is W0 with rows rescaled to c_j.
    layer = predicted_features(w0, np.ones(20), relu, blind, 60, beta, np.random.default_rng(3))
    u = np.random.default_rng(3).standard_normal(15)
    u -= (u @ beta) * beta
    bulk = (layer.bulk_scale / np.linalg.norm(w0, axis=1))[:, None] * w0
    np.testing.assert_allclose(layer.bulk_along_spike, bulk @ u / np.linalg.norm(u), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# giantstep.theory.errors: the solver's numerics on problems with known answers (§3.3)
# ---------------------------------------------------------------------------------------------


def increasing_linear_map(rng, size, radius):
    """V ↦ AV + b with A ≥ 0 of spectral radius ``radius``, b > 0: increasing and bounded
    below its fixed point (I − A)⁻¹b, like the self-energy map."""
    a = rng.uniform(0.0, 1.0, (size, size))
    a *= radius / np.max(np.abs(np.linalg.eigvals(a)))
    b = rng.uniform(0.5, 1.5, size)
    return a, b, np.linalg.solve(np.eye(size) - a, b)


def test_fixed_point_iteration_reaches_the_fixed_point_of_an_increasing_map():
    rng = np.random.default_rng(31)
    a, b, exact = increasing_linear_map(rng, 4, 0.9)
    calls = []

    def step(v):
        calls.append(v.copy())
        return a @ v + b, ("aux", v.copy())

    plain = solve_fixed_point(step, np.zeros(4), accelerate=False, keep_history=True)
    np.testing.assert_allclose(plain.value, exact, rtol=1e-8)
    mapped = a @ plain.value + b
    assert np.max(np.abs(mapped - plain.value) / (1 + np.abs(mapped))) < 1e-10
    # From below, the plain iteration rises monotonically; its history starts at the start.
    assert plain.history.shape == (plain.iterations + 1, 4)
    np.testing.assert_array_equal(plain.history[0], np.zeros(4))
    assert np.all(np.diff(plain.history, axis=0) > 0)
    # The auxiliary value is the map's at the returned point; one call per iteration + 1.
    assert plain.aux[0] == "aux"
    np.testing.assert_array_equal(plain.aux[1], plain.value)
    assert len(calls) == plain.iterations + 1
    # Anderson mixing solves a linear map in a few steps; from above it also converges.
    fast = solve_fixed_point(lambda v: (a @ v + b, None), np.zeros(4))
    np.testing.assert_allclose(fast.value, exact, rtol=1e-9)
    assert fast.iterations < 20 < plain.iterations
    assert fast.history.shape == (0,)
    above = solve_fixed_point(lambda v: (a @ v + b, None), 3 * exact, accelerate=False)
    np.testing.assert_allclose(above.value, exact, rtol=1e-8)
    # A looser tolerance stops earlier, and further from the fixed point.
    loose = solve_fixed_point(step, np.zeros(4), accelerate=False, tolerance=1e-4)
    assert loose.iterations < plain.iterations
    assert 1e-7 < np.max(np.abs(loose.value - exact) / exact) < 1e-2


def test_fixed_point_iteration_stops_on_what_does_not_converge():
    with pytest.raises(RuntimeError, match="did not converge in 7 steps"):
        solve_fixed_point(lambda v: (v + 1.0, None), np.zeros(3), max_iterations=7)
    with pytest.raises(RuntimeError) as err:
        solve_fixed_point(lambda v: (v + np.nan, None), np.zeros(3))
    assert str(err.value) == "the self-energy iteration produced non-finite values"
    # F(v) = v/2 + 1 from 0: v_k = 2 − 2^(1−k), and the stopping size |F(v) − v|/(1 + F(v)) is
    # 2^−k/(3 − 2^−k): first below 1e-10 at k = 32.
    point = solve_fixed_point(lambda v: (v / 2 + 1, None), np.zeros(1), accelerate=False)
    assert point.iterations == 32
    assert 2.0**-31 / (3 - 2.0**-31) >= 1e-10 > 2.0**-32 / (3 - 2.0**-32)
    # The start is a fixed point: no iteration, the start returned (as a copy).
    start = np.array([1.0, 2.0])
    point = solve_fixed_point(lambda v: (v.copy(), "here"), start)
    assert point.iterations == 0 and point.aux == "here"
    np.testing.assert_array_equal(point.value, start)
    assert point.value is not start


def test_anderson_mixing_never_proposes_negative_self_energies():
    # F(V) = ½√(V + 1) ... increasing, concave, fixed point V* = (1 + √17)/8 per entry; the
    # mixed proposals must stay ≥ 0 and the iteration must still converge.
    seen = []

    def step(v):
        seen.append(v.copy())
        return 0.5 * np.sqrt(v + 1.0) + np.array([0.0, 0.1, 0.3]), None

    point = solve_fixed_point(step, np.zeros(3))
    assert min(float(np.min(v)) for v in seen) >= 0
    shift = np.array([0.0, 0.1, 0.3])
    # V = ½√(V + 1) + c  ⇔  (V − c)² = (V + 1)/4 with V ≥ c.
    exact = (8 * shift + 1 + np.sqrt((8 * shift + 1) ** 2 - 16 * (4 * shift**2 - 1))) / 8
    np.testing.assert_allclose(point.value, exact, rtol=1e-9)


def test_fluctuation_system_is_solved_to_its_tolerance():
    rng = np.random.default_rng(32)
    for size in (1, 5, 31):
        b = rng.uniform(0, 1, (size, size))
        b *= 0.8 / np.max(np.abs(np.linalg.eigvals(b)))
        rhs = rng.uniform(0.1, 1.0, size)
        e = solve_fluctuations(lambda x, b=b: b @ x, rhs)
        np.testing.assert_allclose(e, np.linalg.solve(np.eye(size) - b, rhs), rtol=1e-10)
        assert np.linalg.norm(rhs - e + b @ e) <= 1e-11 * np.linalg.norm(rhs)
    np.testing.assert_array_equal(solve_fluctuations(lambda x: x, np.zeros(4)), np.zeros(4))
    # B = 0: the solution is the right-hand side, after one Krylov dimension.
    calls = []
    rhs = np.array([1.0, -2.0, 0.5])
    e = solve_fluctuations(lambda x: calls.append(1) or 0 * x, rhs)
    np.testing.assert_allclose(e, rhs, rtol=1e-15)
    assert len(calls) == 1


def test_fluctuation_solver_stops_at_its_tolerance_relative_to_the_right_hand_side():
    # I − B with eigenvalues spread over [0.5, 1] (no early breakdown of the Krylov space):
    # GMRES gains a factor ~(√2 − 1)/(√2 + 1) per dimension, so the relative residual 1e-10
    # takes far fewer than the 60 dimensions, for a right-hand side of any norm.
    rng = np.random.default_rng(36)
    q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    b = q @ np.diag(rng.uniform(0.0, 0.5, 60)) @ q.T
    for scale in (1e-3, 100.0):
        rhs = scale * rng.standard_normal(60)
        calls = []
        e = solve_fluctuations(lambda x, c=calls: c.append(1) or b @ x, rhs, tolerance=1e-10)
        residual = np.linalg.norm(rhs - e + b @ e) / np.linalg.norm(rhs)
        assert 1e-13 < residual <= 1e-10  # stopped at the tolerance, not at the exact solution
        assert len(calls) <= 30


def test_fluctuation_solver_stops_when_the_krylov_space_closes():
    # B = u uᵀ/2: the Krylov space of any rhs is span{rhs, u}, closed after two dimensions; at
    # tolerance 0 only that breakdown (relative to ‖rhs‖ = 1e3) stops it, at the exact solution.
    rng = np.random.default_rng(37)
    u = rng.standard_normal(40)
    u /= np.linalg.norm(u)
    b = 0.5 * np.outer(u, u)
    rhs = 1e3 * rng.standard_normal(40)
    calls = []
    e = solve_fluctuations(lambda x: calls.append(1) or b @ x, rhs, tolerance=0.0)
    assert len(calls) == 2
    np.testing.assert_allclose(e, np.linalg.solve(np.eye(40) - b, rhs), rtol=1e-12)


def test_cholesky_inverse_gives_the_lower_triangle_of_the_inverse():
    rng = np.random.default_rng(33)
    x = rng.standard_normal((8, 8))
    matrix = x @ x.T + 0.5 * np.eye(8)
    lower = errors._spd_inverse_lower(matrix.copy())
    inverse = np.linalg.inv(matrix)
    np.testing.assert_allclose(np.tril(lower), np.tril(inverse), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.triu(lower, 1), np.zeros((8, 8)))
    np.testing.assert_allclose(errors._symmetric_from_lower(lower), inverse, rtol=1e-10)
    with pytest.raises(np.linalg.LinAlgError) as err:
        errors._spd_inverse_lower(-matrix.copy())
    assert str(err.value) == "the regularised feature covariance is not positive definite"


@pytest.mark.parametrize("kind", ["diagonal", "matrix", "singular"])
def test_low_rank_core_is_the_woodbury_correction(kind):
    # (G⁻¹ + P R Pᵀ)⁻¹ = G − G P C Pᵀ G for R ⪰ 0, also when R is singular.
    rng = np.random.default_rng(34)
    x = rng.standard_normal((10, 10))
    g = np.linalg.inv(x @ x.T + np.eye(10))
    p = rng.standard_normal((10, 3))
    if kind == "diagonal":
        weights = rng.uniform(0.1, 2.0, 3)
        r = np.diag(weights)
    else:
        y = rng.standard_normal((3, 3 if kind == "matrix" else 1))
        weights = r = y @ y.T
    core = errors._low_rank_core(weights, p.T @ g @ p)
    exact = np.linalg.inv(np.linalg.inv(g) + p @ r @ p.T)
    np.testing.assert_allclose(g - g @ p @ core @ p.T @ g, exact, rtol=1e-9, atol=1e-12)


def test_homogeneity_is_equality_to_rounding():
    def layer(spike, scale):
        n = len(spike)
        return SpikedFeatures(
            np.asarray(spike, float), np.eye(n), np.asarray(scale, float), np.zeros(n),
            np.zeros(n), 0.5,
        )  # fmt: skip

    assert errors.is_homogeneous(layer([0.3, 0.3 + 1e-14], [2.0, 2.0]))
    assert not errors.is_homogeneous(layer([0.3, 0.3 + 1e-9], [2.0, 2.0]))
    assert not errors.is_homogeneous(layer([0.3, 0.3], [2.0, 2.0 + 1e-9]))
    # The tolerance is relative to the largest entry above 1.
    assert errors.is_homogeneous(layer([1e6, 1e6 + 1e-7], [1.0, 1.0]))
    assert not errors.is_homogeneous(layer([1e6, 1e6 + 1e-4], [1.0, 1.0]))
    # Below 1 the tolerance is 1e-12 absolute, its edge included.
    assert errors.is_homogeneous(layer([0.0, 1e-12], [1.0, 1.0]))
    assert not errors.is_homogeneous(layer([0.3, 0.3 + 1.5e-12], [1.0, 1.0]))


def test_odd_activations_are_recognised():
    assert errors._is_odd(get_activation("tanh"))
    assert not errors._is_odd(get_activation("relu"))
    slightly_even = Activation.from_callable(
        lambda x: np.tanh(x) + 1e-6 * x * x, lambda x: 1 - np.tanh(x) ** 2 + 2e-6 * x
    )
    assert not errors._is_odd(slightly_even)
    # Odd but only far from 0: the check covers [−6, 6].
    far = Activation.from_callable(lambda x: np.where(np.abs(x) > 5, x**3, x), lambda x: 1 + 0 * x)
    assert not errors._is_odd(
        Activation.from_callable(lambda x: np.where(x > 5.5, 1.0, x), lambda x: 1 + 0 * x)
    )
    assert errors._is_odd(far)
    # The check is strict, to rounding: a constant 1e-10 or an even part 1e-9 x² is not odd
    # (the fast path would then predict another activation's errors).
    for even_part in (lambda x: 1e-10 + 0 * x, lambda x: 1e-9 * x * x):
        nearly = Activation.from_callable(lambda x, e=even_part: np.tanh(x) + e(x), lambda x: x)
        assert not errors._is_odd(nearly)
    # An even bump narrower than the grid's step, at 0: the grid includes 0 itself.
    bump = Activation.from_callable(
        lambda x: np.tanh(x) + np.maximum(0.0, 0.01 - np.abs(x)), lambda x: 1 - np.tanh(x) ** 2
    )
    assert not errors._is_odd(bump)


def built_in_layer(width=60, dim=50, seed=35, spike=0.7, scale=1.1, cosine=0.8):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((width, dim))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    beta, other = np.eye(dim)[0], np.eye(dim)[1]
    v = cosine * beta + math.sqrt(1 - cosine**2) * other
    bulk = scale * w + 0.3 * np.outer(w @ beta, beta)
    return SpikedFeatures.from_layer(bulk, np.full(width, spike), v, beta, np.full(width, scale))


def test_node_functions_are_the_conditional_gaussian_moments():
    # Neuron: relu(r s + c g): E = rsΦ(a) + cφ(a), E σ′ = Φ(a), Var-part E σ² − E² − c²(E σ′)²
    # with a = rs/c. Target σ*(u) = u + (u² − 1)/2 at u = γs + ρz: h = γs + γ²(s² − 1)/2,
    # h1 = E[z σ*] = ρ(1 + γs), hh = E σ*² + σ_ε² = h² + ρ²(1 + γs)² + ρ⁴/2 + σ_ε².
    layer = built_in_layer()
    relu, target = get_activation("relu"), parse_target("z1 + He2(z1)/2")
    for homogeneous in (True, False):
        f = errors._node_functions(layer, relu, target, 0.3, 15, homogeneous)
        s = f.nodes
        np.testing.assert_array_equal(s, np.polynomial.hermite_e.hermegauss(15)[0])
        assert f.weights.sum() == pytest.approx(1.0, rel=1e-14)
        r, c = 0.7, 1.1
        a = r * s / c
        mean = r * s * special.ndtr(a) + c * pdf(a)
        second = (r * r * s * s + c * c) * special.ndtr(a) + r * s * c * pdf(a)
        rows = 1 if homogeneous else 60
        assert f.mean.shape == f.slope.shape == f.residual.shape == f.radial.shape == (rows, 15)
        np.testing.assert_allclose(f.mean, np.broadcast_to(mean, (rows, 15)), rtol=1e-12)
        np.testing.assert_allclose(f.slope, np.broadcast_to(special.ndtr(a), (rows, 15)))
        # The shared He₂ part: ν = E[relu(rs + cg) He₂(g)] √(κ/2) = c φ(a) √(κ/2).
        radial = c * pdf(a) * math.sqrt(layer.coherence / 2)
        assert 0.5 / 50 < layer.coherence < 2 / 50  # about 1/d
        np.testing.assert_allclose(f.radial, np.broadcast_to(radial, (rows, 15)), rtol=1e-12)
        residual = second - mean**2 - c * c * special.ndtr(a) ** 2 - radial**2
        np.testing.assert_allclose(f.residual[0], residual, rtol=1e-10, atol=1e-14)
        gamma, rho = 0.8, 0.6
        h = gamma * s + gamma**2 * (s * s - 1) / 2
        h1 = rho * (1 + gamma * s)
        np.testing.assert_allclose(f.target_mean, h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(f.target_cross, h1, rtol=1e-12, atol=1e-12)
        hh = h**2 + h1**2 + rho**4 / 2 + 0.09
        np.testing.assert_allclose(f.target_second, hh, rtol=1e-11)


def test_node_functions_of_a_kinked_target_seen_almost_along_the_spike():
    # σ*(u) = relu(u), u = γs + ρz with ρ = √(1 − 0.99²) ≈ 0.14 < 1/4: h(s) = E_z relu(u) is
    # nearly relu(γs), so the spike rule splits at its kink s = 0. Closed forms with a = γs/ρ:
    # h = γsΦ(a) + ρφ(a), h1 = E[z relu(u)] = ρΦ(a) (Stein), and E_s h(s) = E relu = φ(0).
    layer = built_in_layer(cosine=0.99)
    gamma, rho = layer.cosine, math.sqrt(1 - layer.cosine**2)
    assert rho < 0.25
    relu = get_activation("relu")
    f = errors._node_functions(layer, relu, parse_target("relu(z1)"), 0.0, 15, True)
    s = f.nodes
    a = gamma * s / rho
    h = gamma * s * special.ndtr(a) + rho * pdf(a)
    np.testing.assert_allclose(f.target_mean, h, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(f.target_cross, rho * special.ndtr(a), rtol=1e-10, atol=1e-14)
    # The split rule integrates these kinked h to ~1e-9 (Gauss–Hermite at 15 nodes: ~1e-4).
    assert f.weights @ f.target_mean == pytest.approx(PHI0, rel=1e-8)
    assert f.weights @ f.target_cross == pytest.approx(rho / 2, rel=1e-8)


def test_label_noise_enters_the_errors_linearly_in_its_variance():
    # Only hh carries σ_ε² and every equation after it is linear: E(σ) = E(0) + σ² D.
    layer = built_in_layer()
    relu, target = get_activation("relu"), parse_target("z1 + He2(z1)/2")
    for path in ("homogeneous", "heterogeneous"):
        curves = [
            spiked_errors(layer, relu, target, noise, [90, 240], [1e-3, 0.1], path=path)
            for noise in (0.0, 0.2, 0.4)
        ]
        for kind in ("test", "train"):
            base, small, large = (getattr(curve, kind) for curve in curves)
            np.testing.assert_allclose(large - base, 4 * (small - base), rtol=1e-8)
            assert np.all(small > base)
        # The noise costs at least σ² in test error and less than σ² in training error.
        assert np.all(curves[2].test - curves[0].test > 0.16)
        assert np.all(curves[2].train - curves[0].train < 0.16)


def test_scaling_the_activation_is_scaling_the_ridge():
    # Ridge on aφ with penalty a²λ fits the same predictor: the errors are the same. The
    # scaled relu goes through the quadrature, the plain one through the closed forms.
    layer = built_in_layer()
    relu, target = get_activation("relu"), parse_target("z1 + He2(z1)/2")
    doubled = Activation.from_callable(
        lambda x: 2 * np.maximum(x, 0), lambda x: 2.0 * (x > 0), name="2relu", kinks=(0.0,)
    )
    ridges = np.array([1e-3, 0.1])
    for path in ("homogeneous", "heterogeneous"):
        plain = spiked_errors(layer, relu, target, 0.1, [120, 240], ridges, path=path)
        scaled = spiked_errors(layer, doubled, target, 0.1, [120, 240], 4 * ridges, path=path)
        np.testing.assert_allclose(scaled.test, plain.test, rtol=1e-9)
        np.testing.assert_allclose(scaled.train, plain.train, rtol=1e-9)
    w = np.random.default_rng(36).standard_normal((40, 30)) / np.sqrt(30)
    beta = np.eye(30)[:1]
    plain = random_features_errors(w, relu, target, beta, 0.1, [60, 120], ridges)
    scaled = random_features_errors(w, doubled, target, beta, 0.1, [60, 120], 4 * ridges)
    np.testing.assert_allclose(scaled.test, plain.test, rtol=1e-9)


def test_scaling_the_labels_scales_the_errors():
    # y → b y (target and noise): the ridge predictor scales by b, both errors by b².
    layer = built_in_layer()
    tanh = get_activation("tanh")
    one, three = parse_target("z1 + He2(z1)/2"), parse_target("3*z1 + 1.5*He2(z1)")
    for path in ("homogeneous", "heterogeneous"):
        plain = spiked_errors(layer, tanh, one, 0.1, 150, [1e-2, 0.3], path=path)
        scaled = spiked_errors(layer, tanh, three, 0.3, 150, [1e-2, 0.3], path=path)
        np.testing.assert_allclose(scaled.test, 9 * plain.test, rtol=1e-9)
        np.testing.assert_allclose(scaled.train, 9 * plain.train, rtol=1e-9)


def test_spiked_errors_refuse_what_they_do_not_cover():
    layer = built_in_layer(width=20, dim=20)
    relu = get_activation("relu")
    with pytest.raises(ValueError, match="rank-1 target, got rank 2"):
        spiked_errors(layer, relu, parse_target("z1 + z1*z2"), 0.0, 40, 0.1)
    with pytest.raises(ValueError, match="path must be auto, homogeneous or heterogeneous"):
        spiked_errors(layer, relu, parse_target("z1"), 0.0, 40, 0.1, path="fast")
    unequal = SpikedFeatures.from_layer(
        np.eye(20), np.linspace(0.1, 1.0, 20), np.eye(20)[0], np.eye(20)[0]
    )
    with pytest.raises(ValueError) as err:
        spiked_errors(unequal, relu, parse_target("z1"), 0.0, 40, 0.1, path="homogeneous")
    assert str(err.value) == "the homogeneous path needs equal spikes r_j and scales c_j"


def counting(base, steps, key):
    """The solver class base, counting its self-energy evaluations in steps[key]."""

    class Solver(base):
        def self_energy_step(self, v, samples, ridge):
            steps[key] += 1
            return super().self_energy_step(v, samples, ridge)

    return Solver


class Counted:
    """Counts the self-energy evaluations of the solvers errors.spiked_errors builds."""

    def __init__(self, monkeypatch):
        self.steps = {"homogeneous": 0, "heterogeneous": 0}
        for path in self.steps:
            base = getattr(errors, f"_{path.capitalize()}Solver")
            monkeypatch.setattr(errors, base.__name__, counting(base, self.steps, path))


def test_spiked_errors_take_the_path_asked_for_and_accelerate_by_default(monkeypatch):
    layer = built_in_layer(width=30, dim=30)  # equal neurons
    relu, target = get_activation("relu"), parse_target("z1 + He2(z1)/2")
    counted = Counted(monkeypatch)
    runs = {}
    for path, accelerate in (("auto", None), ("auto", False), ("heterogeneous", None)):
        keywords = {} if accelerate is None else {"accelerate": accelerate}
        before = dict(counted.steps)
        curve = spiked_errors(layer, relu, target, 0.0, 60, [1e-2, 1.0], path=path, **keywords)
        runs[path, accelerate] = curve, {k: counted.steps[k] - before[k] for k in before}
    (fast, fast_steps), (plain, plain_steps) = runs["auto", None], runs["auto", False]
    assert fast_steps["heterogeneous"] == plain_steps["heterogeneous"] == 0
    assert 0 < fast_steps["homogeneous"] < plain_steps["homogeneous"] / 2
    general, general_steps = runs["heterogeneous", None]
    assert general_steps["homogeneous"] == 0 and general_steps["heterogeneous"] > 0
    np.testing.assert_allclose(general.test, fast.test, rtol=1e-8)
    np.testing.assert_allclose(plain.test, fast.test, rtol=1e-8)


def test_ridge_path_returns_its_grid_and_anderson_mixing_saves_iterations():
    layer = built_in_layer()
    relu, target = get_activation("relu"), parse_target("z1 + He2(z1)/2")
    functions = errors._node_functions(layer, relu, target, 0.3, 21, True)

    count = {"steps": 0}
    solver = counting(errors._HomogeneousSolver, count, "steps")(layer, functions)
    n, lam = np.array([60.0, 240.0]), np.array([1e-3, 1e-1, 1.0])
    curves, steps = [], []
    for accelerate in (True, False):
        count["steps"] = 0
        curves.append(errors._ridge_path(solver, n, lam, 21, accelerate))
        steps.append(count["steps"])
    assert steps[0] < steps[1] / 2
    np.testing.assert_allclose(curves[0].test, curves[1].test, rtol=1e-8)
    np.testing.assert_array_equal(curves[0].samples, n)
    np.testing.assert_array_equal(curves[0].ridges, lam)


def test_random_features_errors_hold_down_to_the_smallest_ridges():
    """With fewer features than samples the errors have a limit as λ → 0. κ's bisection,
    capped at 200 halvings, could not resolve κ ~ λ below λ ≈ 1e-55: the predicted training
    error fell to 1e-79 at λ = 1e-100 and to 0 at 1e-300."""
    rng = np.random.default_rng(0)
    eigenvalues, projections = rng.uniform(0.5, 2.0, 20), rng.normal(size=20) * 0.3
    ridges = [1e-12, 1e-100, 1e-300]
    curve = errors.spectral_ridge_errors(eigenvalues, projections, 2.0, 256, ridges)
    np.testing.assert_allclose(curve.train[0, 1:], curve.train[0, 0], rtol=1e-9)
    np.testing.assert_allclose(curve.test[0, 1:], curve.test[0, 0], rtol=1e-9)
    assert curve.train[0, 0] > 0.5


@pytest.mark.parametrize(
    "eigenvalues, projections, second, match",
    [(np.ones(10), np.ones(1), 1.0, "two vectors of one length"),
     (np.ones(10), np.ones((10, 1)), 1.0, "two vectors of one length"),
     (np.full(10, np.nan), np.ones(10), 1.0, "must be finite"),
     (np.ones(10), np.ones(10), -1.0, "second_moment")],
)  # fmt: skip
def test_spectral_ridge_errors_refuses_what_would_broadcast_into_other_numbers(
    eigenvalues, projections, second, match
):
    """projections of length 1 or shape (10, 1) broadcast into other numbers (a (1, 10) test
    error with negative entries); NaN eigenvalues gave NaN; E y² = -1 a negative error."""
    with pytest.raises(ValueError, match=match):
        errors.spectral_ridge_errors(eigenvalues, projections, second, 20, [0.1])


def test_coherence_is_the_mean_squared_normalised_off_diagonal_of_the_bulk_gram():
    """κ of :class:`SpikedFeatures`: mean over i ≠ j of ``Ω_ij² / (c_i² c_j²)``; ≈ 1/d for
    random rows; 0 for one neuron; a zero scale counts as no coherence, not 0/0."""
    gram = np.array([[4.0, 1.0, 0.0], [1.0, 1.0, 0.5], [0.0, 0.5, 0.0]])
    layer = errors.SpikedFeatures(
        spike=np.zeros(3), bulk_gram=gram, bulk_scale=np.array([2.0, 1.0, 0.0]),
        bulk_along_spike=np.zeros(3), bulk_along_target=np.zeros(3), cosine=1.0,
    )  # fmt: skip
    assert layer.coherence == pytest.approx(2 * (1.0 / 4) / 6)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 500))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    beta = np.eye(500)[0]
    random_rows = errors.SpikedFeatures.from_layer(w, np.zeros(300), beta, beta)
    assert random_rows.coherence == pytest.approx(1 / 500, rel=0.02)
    one = errors.SpikedFeatures.from_layer(w[:1], np.zeros(1), beta, beta)
    assert one.coherence == 0.0


def test_spectral_ridge_errors_of_a_zero_target_are_zero():
    """E y² = 0 (a zero target without noise) is a target like any other, not refused: the
    ridge fits nothing and errs by nothing."""
    curve = errors.spectral_ridge_errors(np.linspace(0.1, 2, 10), np.zeros(10), 0.0, 20, [0.1])
    assert curve.test.tolist() == [[0.0]] and curve.train.tolist() == [[0.0]]
