"""The error theory without simulation: Gaussian constants, DE identities, solver paths.

THEORY-ERRORS.md §5 items 1 and 2; the checks against simulation are in
test_error_theory_slow.py.
"""

from math import pi, sqrt

import numpy as np
import pytest
from scipy import integrate, special

from giantstep.activations import get_activation
from giantstep.config import validate_config
from giantstep.experiment import build
from giantstep.hermite import coefficients
from giantstep.targets import parse_target
from giantstep.theory import errors
from giantstep.theory.errors import (
    ResidualStatistics,
    SpikedFeatures,
    predict_errors,
    predict_learning_curve,
    predicted_features,
    random_features_errors,
    ridge_kappa,
    solve_fixed_point,
    spectral_ridge_errors,
    spiked_errors,
    trained_layer_features,
)
from giantstep.theory.gaussian import (
    activation_constants,
    gaussian_moments,
    neuron_constants,
    panel_factors,
)

PHI0 = 1 / sqrt(2 * pi)
RELU, TANH = get_activation("relu"), get_activation("tanh")
HE2_TARGET, TANH_TARGET = parse_target("z1 + He2(z1)/2"), parse_target("tanh(z1)")
MEAN_TARGET = parse_target("tanh(z1) + 3")  # its mean is 96 % of E[y²]


def unit_rows(rng, width, dim):
    w = rng.standard_normal((width, dim))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def adaptive(f):
    """``E f(g)`` by adaptive quadrature: an integrator independent of the module's rules."""
    value, _ = integrate.quad(
        lambda g: f(g) * np.exp(-g * g / 2) * PHI0, -40, 40, epsabs=1e-14, epsrel=1e-14, limit=500
    )
    return value


# ---------------------------------------------------------------------------------------------
# 1. Constants
# ---------------------------------------------------------------------------------------------


def test_relu_hermite_coefficients_match_closed_forms():
    # μ_k(relu) = φ(0) He_{k−2}(0) for k ≥ 2: 1/√2π, 1/2, 1/√2π, 0, −1/√2π, 0, 3/√2π.
    expected = np.array([PHI0, 0.5, PHI0, 0.0, -PHI0, 0.0, 3 * PHI0])
    np.testing.assert_allclose(coefficients(RELU.function, 6, RELU.kinks), expected, atol=1e-12)
    constants = activation_constants(RELU)
    np.testing.assert_allclose(constants.mu, expected[:4], atol=1e-12)
    assert abs(constants.second_moment - 0.5) < 1e-12
    assert abs(constants.nonlinear - (0.5 - 1 / (2 * pi) - 0.25)) < 1e-12
    assert abs(constants.slope_variance - 0.25) < 1e-12


def test_tanh_constants_match_adaptive_quadrature():
    constants = activation_constants(TANH)
    mu1 = adaptive(lambda g: np.tanh(g) * g)
    nonlinear = adaptive(lambda g: np.tanh(g) ** 2) - mu1**2
    slope_variance = adaptive(lambda g: (1 - np.tanh(g) ** 2) ** 2) - mu1**2
    # THEORY-ERRORS.md §5 prints μ*² = 0.0274148…; 30-digit quadrature (mpmath) gives
    # E tanh² = 0.39429449040, μ_1 = 0.60570550960, μ*² = 0.02741532604.
    assert abs(mu1 - 0.6057055096) < 1e-10 and abs(nonlinear - 0.0274153260) < 1e-10
    assert abs(constants.mu[1] - mu1) < 1e-10
    assert abs(constants.nonlinear - nonlinear) < 1e-10
    assert abs(constants.slope_variance - slope_variance) < 1e-10
    assert abs(constants.mu[0]) < 1e-14 and abs(constants.mu[2]) < 1e-14


def test_kink_split_quadrature_matches_relu_closed_forms():
    m, c = np.meshgrid(np.linspace(-5, 5, 41), np.linspace(0.5, 3, 11))
    quadrature = gaussian_moments(lambda x: np.maximum(x, 0), m, c, (0.0,))
    exact = gaussian_moments(lambda x: np.maximum(x, 0), m, c, closed_form="relu")
    a = m / c
    np.testing.assert_allclose(
        exact.mean, m * special.ndtr(a) + c * np.exp(-a * a / 2) * PHI0, rtol=1e-14, atol=1e-15
    )
    # E[relu(m + c g) He₂(g)] = c² E[δ(m + c g)] = c φ(m/c); |x| has twice the kink, and is
    # not zero on either side of it (each piece's part counts).
    np.testing.assert_allclose(exact.quadratic, c * np.exp(-a * a / 2) * PHI0, rtol=1e-14)
    absolute = gaussian_moments(np.abs, m, c, (0.0,))
    np.testing.assert_allclose(absolute.quadratic, 2 * exact.quadratic, rtol=1e-12, atol=1e-13)
    for got, want in [
        (quadrature.mean, exact.mean),
        (quadrature.cross, exact.cross),
        (quadrature.second, exact.second),
        (quadrature.quadratic, exact.quadratic),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_kink_free_rule_matches_a_million_node_reference():
    softplus = get_activation("softplus")
    shifts = np.array([-4.0, -1.5, 0.0, 0.7, 3.0])
    scales = np.array([0.5, 1.0, 2.0, 3.0, 1.3])
    moments = gaussian_moments(softplus.function, shifts, scales)
    # Composite Simpson on [−12, 12] with 10⁶ + 1 nodes: error ~h⁴ ≈ 1e-19.
    g = np.linspace(-12, 12, 1_000_001)
    simpson = np.ones_like(g)
    simpson[1:-1:2], simpson[2:-1:2] = 4, 2
    weights = simpson * (g[1] - g[0]) / 3 * np.exp(-g * g / 2) * PHI0
    for k, (m, c) in enumerate(zip(shifts, scales, strict=True)):
        values = softplus.function(m + c * g)
        assert abs(moments.mean[k] - weights @ values) < 1e-10
        assert abs(moments.cross[k] - weights @ (values * g)) < 1e-10
        assert abs(moments.second[k] - weights @ values**2) < 1e-10
        assert abs(moments.quadratic[k] - weights @ (values * (g * g - 1))) < 1e-10


def test_quadratic_moment_of_a_cubic_is_six_m_c_squared():
    """``E[(m + c g)³ He₂(g)] = c² E[6 (m + c g)] = 6 m c²``; with c = 0 it is 0."""
    moments = gaussian_moments(lambda x: x**3, [0.5, -1.2, 2.0], [2.0, 0.7, 0.0])
    np.testing.assert_allclose(moments.quadratic, [12.0, -6 * 1.2 * 0.49, 0.0], atol=1e-12)


def test_wide_scales_get_panels_fine_enough_for_the_activation():
    """tanh(m + c g) turns over on a g-scale of 1/c: with 22 panels its mean was off by
    3.5e-5 relative at c = 10 (8e-4 absolute at c = 50). The reference is scipy's adaptive
    quad, split where m + c g = 0."""
    shifts, scales = np.array([0.3, -2.0, 0.3, 1.0]), np.array([3.0, 10.0, 50.0, 120.0])
    moments = gaussian_moments(np.tanh, shifts, scales)
    assert list(panel_factors(scales)) == [2, 8, 32, 64] and panel_factors([1.0, 2.0])[0] == 1
    for k, (m, c) in enumerate(zip(shifts, scales, strict=True)):
        for got, power in ((moments.mean[k], 0), (moments.cross[k], 1)):
            want = sum(
                integrate.quad(lambda g, p=power, m=m, c=c: np.tanh(m + c * g) * g**p
                               * np.exp(-g * g / 2) * PHI0, a, b, epsabs=1e-15, limit=400)[0]
                for a, b in ((-12.0, -m / c), (-m / c, 12.0))
            )  # fmt: skip
            assert abs(got - want) < 1e-12


def test_neuron_constants_scale_with_the_row_norm():
    # relu(‖w‖ g): mean ‖w‖φ(0), E σ′ = 1/2, E σ″ = E δ(‖w‖g) = φ(0)/‖w‖, Var σ′ = 1/4.
    norms = np.array([0.5, 1.0, 2.0])
    constants = neuron_constants(RELU, norms)
    np.testing.assert_allclose(constants.mean, norms * PHI0, atol=1e-12)
    np.testing.assert_allclose(constants.slope, 0.5, atol=1e-12)
    np.testing.assert_allclose(constants.curvature, PHI0 / norms, atol=1e-12)
    np.testing.assert_allclose(constants.slope_variance, 0.25, atol=1e-12)
    np.testing.assert_allclose(
        constants.nonlinear, norms**2 * (0.5 - 1 / (2 * pi) - 0.25), atol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# 2. Deterministic-equivalent identities
# ---------------------------------------------------------------------------------------------


def test_kappa_for_identity_covariance_is_the_quadratic_root():
    width = 300
    samples = np.array([100.0, 300.0, 600.0, 2400.0])
    ridges = np.logspace(-4, 1, 6)
    kappa = ridge_kappa(np.ones(width), samples, ridges)
    b = ridges[None, :] + width / samples[:, None] - 1
    closed = (b + np.sqrt(b * b + 4 * ridges[None, :])) / 2
    np.testing.assert_allclose(kappa, closed, rtol=1e-10)


def test_train_error_is_the_test_error_times_lambda_over_kappa_squared():
    rng = np.random.default_rng(3)
    eigenvalues = rng.gamma(0.5, 1.0, 200)
    projections = rng.standard_normal(200) * np.sqrt(eigenvalues) * 0.05
    samples, ridges = np.array([150, 400, 1600]), np.array([1e-3, 0.1, 1.0])
    curve = spectral_ridge_errors(eigenvalues, projections, 1.3, samples, ridges)
    kappa = ridge_kappa(eigenvalues, samples, ridges)
    np.testing.assert_allclose(curve.train, (ridges / kappa) ** 2 * curve.test, rtol=1e-12)
    assert np.all(curve.train < curve.test)


def test_huge_ridge_predicts_the_label_second_moment():
    rng = np.random.default_rng(4)
    w = unit_rows(rng, 100, 80)
    beta = np.eye(80)[0]
    second = HE2_TARGET.second_moment(0.2)
    level1 = random_features_errors(w, RELU, HE2_TARGET, beta[None], 0.2, 300, 1e6)
    assert abs(level1.test[0, 0] - second) < 1e-4
    layer = SpikedFeatures.from_layer(w, np.full(100, 0.4), beta, beta, np.ones(100))
    for path in ("homogeneous", "heterogeneous"):
        spiked = spiked_errors(layer, RELU, HE2_TARGET, 0.2, 300, 1e6, path=path)
        assert abs(spiked.test[0, 0] - second) < 1e-4


@pytest.mark.parametrize(("width", "tolerance"), [(200, 0.011), (800, 0.003)])
@pytest.mark.parametrize(
    ("activation", "target"),
    [(RELU, HE2_TARGET), (TANH, TANH_TARGET), (RELU, MEAN_TARGET)],
    ids=["relu", "tanh", "relu-mean"],
)
def test_spiked_solver_without_spike_reproduces_level_one(width, tolerance, activation, target):
    """relu-mean: without the neurons' shared He₂ part (``spiked_errors``) the solver was 8.7 %
    (N = 200) and 2.6 % (N = 800) below level 1, whose Σ keeps it."""
    rng = np.random.default_rng(width)
    w = unit_rows(rng, width, width)
    beta = np.eye(width)[0]
    ridges = [1e-3, 0.1]
    level1 = random_features_errors(w, activation, target, beta[None], 0.0, 2 * width, ridges)
    no_spike = SpikedFeatures.from_layer(w, np.zeros(width), beta, beta, np.ones(width))
    spiked = spiked_errors(no_spike, activation, target, 0.0, 2 * width, ridges)
    np.testing.assert_allclose(spiked.test, level1.test, rtol=tolerance)
    np.testing.assert_allclose(spiked.train, level1.train, rtol=tolerance)


def spiked_layer(rng, width, dim, spike=0.7, scale=1.05, cosine=0.8):
    w = unit_rows(rng, width, dim)
    beta, other = np.eye(dim)[0], np.eye(dim)[1]
    v = cosine * beta + np.sqrt(1 - cosine**2) * other
    # A small β-amplification term, as in the predicted layer.
    bulk = scale * w + 0.3 * np.outer(w @ beta, beta)
    return SpikedFeatures.from_layer(bulk, np.full(width, spike), v, beta, np.full(width, scale))


@pytest.mark.parametrize(
    ("activation", "target"),
    [(RELU, HE2_TARGET), (TANH, HE2_TARGET), (RELU, MEAN_TARGET)],
    ids=["relu", "tanh", "relu-mean"],
)
def test_homogeneous_fast_path_equals_the_general_path(activation, target):
    layer = spiked_layer(np.random.default_rng(5), 150, 120)
    samples, ridges = [150, 300, 600], [1e-3, 0.1, 1.0]
    fast = spiked_errors(layer, activation, target, 0.1, samples, ridges, path="homogeneous")
    general = spiked_errors(layer, activation, target, 0.1, samples, ridges, path="heterogeneous")
    np.testing.assert_allclose(fast.test, general.test, rtol=1e-8)
    np.testing.assert_allclose(fast.train, general.train, rtol=1e-8)


def test_odd_activation_flips_negative_spikes_onto_the_fast_path():
    rng = np.random.default_rng(6)
    layer = spiked_layer(rng, 120, 100)
    signs = np.where(np.arange(120) % 2, -1.0, 1.0)
    # Neuron j with spike −r and bulk row w_j is, for odd σ, minus the neuron (r, −w_j).
    mixed = SpikedFeatures(
        spike=layer.spike * signs,
        bulk_gram=layer.bulk_gram * np.outer(signs, signs),
        bulk_scale=layer.bulk_scale,
        bulk_along_spike=layer.bulk_along_spike * signs,
        bulk_along_target=layer.bulk_along_target * signs,
        cosine=layer.cosine,
    )
    assert not errors.is_homogeneous(mixed)
    oriented = errors._oriented(mixed, TANH)
    np.testing.assert_array_equal(oriented.spike, layer.spike)
    np.testing.assert_array_equal(oriented.bulk_gram, layer.bulk_gram)
    np.testing.assert_array_equal(oriented.bulk_along_target, layer.bulk_along_target)
    assert errors._oriented(mixed, RELU) is mixed  # relu is not odd: no flip
    flipped = spiked_errors(mixed, TANH, HE2_TARGET, 0.0, 240, [1e-2, 0.1])
    unflipped = errors._ridge_path(  # the general solver on the features as given
        errors._HeterogeneousSolver(
            mixed, errors._node_functions(mixed, TANH, HE2_TARGET, 0.0, 31, False)
        ),
        np.array([240.0]),
        np.array([1e-2, 0.1]),
        31,
        True,
    )
    np.testing.assert_allclose(flipped.test, unflipped.test, rtol=1e-8)


def moniri_layer(dim):
    config = validate_config(
        {"dim": dim, "width": dim, "train": {"residual": "y", "batch_size": 4 * dim}}
    )
    initial, teacher = build(config)
    residual = ResidualStatistics.of(teacher.target)
    steps = config.step_size() * initial.output_scale * initial.second_layer
    return predicted_features(
        initial.first_layer, steps, RELU, residual, 4 * dim, teacher.directions[0],
        np.random.default_rng(0),
    )  # fmt: skip


def cui_layer(dim):
    config = validate_config(
        {
            "dim": dim,
            "width": dim,
            "preset": "dandi",
            "model": {"second_layer": "ones"},
            "train": {
                "batch_size": 2 * dim,
                "step_size": {"scale": 1.0, "width_exponent": 1.0},
            },
        }
    )
    initial, teacher = build(config)
    residual = ResidualStatistics.of(teacher.target, offset=float(PHI0))
    steps = config.step_size() * initial.output_scale * initial.second_layer
    return predicted_features(
        initial.first_layer, steps, RELU, residual, 2 * dim, teacher.directions[0],
        np.random.default_rng(0),
    )  # fmt: skip


@pytest.mark.parametrize("layer", [moniri_layer(150), cui_layer(200)], ids=["moniri", "cui"])
def test_twenty_one_and_forty_one_spike_nodes_agree(layer):
    samples = [2 * layer.width, 4 * layer.width]
    coarse = spiked_errors(layer, RELU, HE2_TARGET, 0.0, samples, [1e-3, 0.1], nodes=21)
    fine = spiked_errors(layer, RELU, HE2_TARGET, 0.0, samples, [1e-3, 0.1], nodes=41)
    np.testing.assert_allclose(coarse.test, fine.test, rtol=1e-6)
    np.testing.assert_allclose(coarse.train, fine.train, rtol=1e-6)


def test_self_energy_iteration_rises_monotonically_to_its_fixed_point():
    layer = spiked_layer(np.random.default_rng(7), 100, 100, spike=0.9)
    functions = errors._node_functions(layer, RELU, HE2_TARGET, 0.0, 21, True)
    solver = errors._HomogeneousSolver(layer, functions)
    general = errors._HeterogeneousSolver(
        layer, errors._node_functions(layer, RELU, HE2_TARGET, 0.0, 21, False)
    )
    for ratio in (0.5, 1, 2, 4, 8):
        for ridge in np.logspace(-4, 1, 6):
            samples = ratio * layer.width
            plain = solve_fixed_point(
                lambda v, n=samples, r=ridge: solver.self_energy_step(v, n, r),
                np.zeros(21),
                accelerate=False,
                keep_history=True,
            )
            assert np.isfinite(plain.value).all() and np.all(plain.value > 0)
            assert np.all(np.diff(plain.history, axis=0) >= -1e-12 * (1 + plain.history[1:]))
            fast = solve_fixed_point(
                lambda v, n=samples, r=ridge: solver.self_energy_step(v, n, r), np.zeros(21)
            )
            np.testing.assert_allclose(fast.value, plain.value, rtol=1e-8)
            assert fast.iterations <= plain.iterations
            if ratio in (0.5, 2) and ridge in (1e-4, 1.0):
                full = solve_fixed_point(
                    lambda v, n=samples, r=ridge: general.self_energy_step(v, n, r),
                    np.zeros(21),
                    accelerate=False,
                    keep_history=True,
                )
                assert np.all(np.diff(full.history, axis=0) >= -1e-12 * (1 + full.history[1:]))
                np.testing.assert_allclose(full.value, plain.value, rtol=1e-8)


# ---------------------------------------------------------------------------------------------
# The entry point: scope, reasons, warnings
# ---------------------------------------------------------------------------------------------

SMALL = {"dim": 50, "width": 50, "readout": {"samples": 100, "ridge": [0.1, 1e-3]}}


def small(**tables):
    data = {**SMALL, "train": {"residual": "y", "batch_size": 200}}
    for key, value in tables.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    config = validate_config(data)
    initial, teacher = build(config)
    trained = initial.with_first_layer(
        initial.first_layer + 0.3 * np.outer(initial.second_layer, teacher.directions[0])
    )
    return config, initial, teacher, trained


def test_one_step_run_gets_all_three_variants_in_ridge_order():
    config, initial, teacher, trained = small()
    predicted = predict_errors(config, initial, teacher, trained)
    for variant in (predicted.random_features, predicted.spiked, predicted.trained_layer):
        assert variant.errors is not None and variant.reason is None
        assert [e.ridge for e in variant.errors] == [0.1, 1e-3]
        assert all(0 < e.train_error < e.test_error for e in variant.errors)
    # relu × (z1 + He2(z1)/2) at n0 = 4d: the spiked variant is flagged, the others are not.
    assert "trained_layer" in predicted.spiked.warning
    assert predicted.trained_layer.warning is None
    baseline = random_features_errors(
        initial.first_layer, RELU, teacher.target, teacher.directions, 0.0, 100, [0.1, 1e-3]
    )
    assert predicted.random_features.errors[1].test_error == pytest.approx(baseline.test[0, 1])


def test_no_amplification_warning_without_second_hermite_terms():
    config, initial, teacher, trained = small(activation="tanh", target={"expression": "tanh(z1)"})
    predicted = predict_errors(config, initial, teacher, trained)
    assert predicted.spiked.errors is not None and predicted.spiked.warning is None


ONE_STEP = ("spiked", "trained_layer")
ALL = ("random_features", "spiked", "trained_layer")


@pytest.mark.parametrize(
    ("tables", "key", "variants"),
    [
        ({"train": {"steps": 0}}, "train.steps = 0: no giant step was taken", ONE_STEP),
        ({"train": {"steps": 2}}, "train.steps = 2: the theory covers one giant step", ONE_STEP),
        (
            {"target": {"expression": "z1 + z1*z2"}},
            "target.expression has rank 2: the spiked theory covers single-index targets (z1 only)",
            ONE_STEP,
        ),
        (
            {"data": {"distribution": "rademacher"}},
            "the theory assumes Gaussian inputs (data.distribution = 'gaussian')",
            ALL,
        ),
        (
            {"target": {"corruption": 0.2}},
            "the theory assumes clean labels y = σ*(β·x) + ε (target.corruption = 0)",
            ALL,
        ),
        (
            {"train": {"mode": "full"}},
            "train.mode = 'full': the theory covers one giant step on the first layer "
            "(train.mode = 'steps'); random_features is the initial layer's baseline",
            ONE_STEP,
        ),
        ({"train": {"residual": "y-f"}}, "train.residual", ("spiked",)),
    ],
)
def test_out_of_scope_variants_say_why(tables, key, variants):
    config, initial, teacher, trained = small(**tables)
    predicted = predict_errors(config, initial, teacher, trained)
    for name in ALL:
        variant = getattr(predicted, name)
        if name in variants:
            assert variant.errors is None and key in variant.reason
        else:
            assert variant.errors is not None and variant.reason is None


def test_mean_field_second_layer_keeps_the_residual_y_minus_f():
    config, initial, teacher, trained = small(
        preset="dandi", model={"second_layer": "ones"}, train={"residual": "y-f"}
    )
    predicted = predict_errors(config, initial, teacher, trained)
    assert predicted.spiked.errors is not None
    assert predict_errors(config, initial, teacher).trained_layer.reason.startswith("no trained")


def test_learning_curve_matches_single_runs():
    config, initial, teacher, trained = small()
    curve = predict_learning_curve(config, initial, teacher, [50, 100, 400], trained)
    single = predict_errors(config, initial, teacher, trained)
    for name in ("random_features", "spiked", "trained_layer"):
        at_100 = [e.test_error for e in getattr(curve[1], name).errors]
        assert at_100 == pytest.approx([e.test_error for e in getattr(single, name).errors])
    more_data = [p.random_features.errors[0].test_error for p in curve]
    assert more_data[2] < more_data[1]


def test_trained_layer_features_recover_an_exact_spike():
    rng = np.random.default_rng(8)
    w0 = unit_rows(rng, 60, 40)
    beta = np.eye(40)[0]
    v = 0.6 * beta + 0.8 * np.eye(40)[1]
    spike = rng.standard_normal(60)
    layer = trained_layer_features(w0, w0 + np.outer(spike, v), beta)
    assert layer.cosine == pytest.approx(0.6)
    # W_b keeps W₀'s own component along v.
    np.testing.assert_allclose(layer.spike, spike, rtol=1e-10)
    np.testing.assert_allclose(layer.bulk_along_spike, w0 @ v, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# From a config to the theory's inputs: the residual, the predicted layer, scope and warnings
# ---------------------------------------------------------------------------------------------


def test_residual_statistics_subtract_the_networks_mean_output_only_for_y_minus_f():
    # Sphere rows (‖w_j‖ = 1) and relu: E σ(w_j·x) = φ(0); with a = 1 and s = 1/N (mean field)
    # the network's mean output is f̄ = s Σ_j a_j φ(0) = φ(0).
    for residual, offset in (("y", 0.0), ("y-f", PHI0)):
        config, initial, teacher, _ = small(
            preset="dandi", model={"second_layer": "ones"}, train={"residual": residual}
        )
        found = errors.residual_statistics(config, initial, teacher)
        expected = ResidualStatistics.of(teacher.target, teacher.noise, offset)
        assert found.mean == pytest.approx(expected.mean, abs=1e-12)
        assert found.second == pytest.approx(expected.second, abs=1e-12)
        assert (found.linear, found.quadratic) == (expected.linear, expected.quadratic)
    assert found.mean == pytest.approx(teacher.target.expectation() - PHI0, abs=1e-12)


def test_predicted_layer_steps_each_neuron_by_its_own_second_layer_weight():
    # moniri: Gaussian a_j, unit rows, relu: r_j = η s a_j E σ′ ‖ζ‖ with E σ′ = 1/2, so
    # r_j/(η s a_j) is one number, ‖ζ‖/2 (a step ∝ 1/a_j would spread it).
    config, initial, teacher, _ = small()
    layer = errors._predicted_layer(config, initial, teacher)
    residual = errors.residual_statistics(config, initial, teacher)
    zeta = sqrt(residual.linear**2 + residual.second * config.dim / config.train.batch_size)
    steps = config.step_size() * initial.output_scale * initial.second_layer
    a = np.abs(initial.second_layer)
    assert a.max() > 10 * a.min()  # unequal weights: a step ∝ 1/a_j would show
    np.testing.assert_allclose(layer.spike, steps * zeta / 2, rtol=1e-12)


def test_predicted_spike_direction_comes_from_the_seeds_own_stream():
    # Its random part is drawn from generator(seed, SPIKE_DIRECTION) (THEORY-ERRORS.md §3.1,
    # a key fixed forever like every other): reproducible, different for another seed.
    from giantstep.data import SPIKE_DIRECTION, generator

    config, initial, teacher, _ = small(seed=5)
    layer = errors._predicted_layer(config, initial, teacher)
    residual = errors.residual_statistics(config, initial, teacher)
    steps = config.step_size() * initial.output_scale * initial.second_layer
    args = (initial.first_layer, steps, RELU, residual, config.train.batch_size)
    beta = teacher.directions[0]
    for seed, same in ((5, True), (6, False), (0, False)):
        other = predicted_features(*args, beta, generator(seed, SPIKE_DIRECTION))
        assert np.allclose(layer.bulk_along_spike, other.bulk_along_spike) == same
    root = predicted_features(*args, beta, generator(5))
    assert not np.allclose(layer.bulk_along_spike, root.bulk_along_spike)
    # The run's prediction keeps the β-amplification term (μ2(relu)μ2(σ*) ≠ 0 here).
    stream = generator(5, SPIKE_DIRECTION)
    plain = predicted_features(*args, beta, stream, beta_amplification=False)
    assert not np.allclose(layer.bulk_gram, plain.bulk_gram)


def test_residual_y_minus_f_is_in_scope_only_for_a_small_output():
    # s‖a‖√N ≤ 1: mean-field ones (s = 1/N: exactly 1) in scope; s = 1 with a = 1 (s‖a‖√N = N)
    # or a Gaussian a (moniri: ~√N) out, and the reason names the second layer in use.
    ones = {"preset": "dandi", "train": {"residual": "y-f"}}
    config, initial, _, _ = small(**ones, model={"second_layer": "ones"})
    assert errors._residual_scope(config, initial) is None
    config, initial, _, _ = small(**ones, model={"second_layer": "ones", "output_scale": 1.0})
    reason = errors._residual_scope(config, initial)
    assert "model.second_layer = 'ones'" in reason and "s = 1 " in reason
    assert reason.endswith("the predicted layer covers train.residual = 'y' here")
    config, initial, _, _ = small(**ones, model={"second_layer": "ones", "output_scale": 1.5 / 50})
    assert "s‖a‖ = 0.212" in errors._residual_scope(config, initial)  # s‖a‖√N = 1.5
    config, initial, _, _ = small(preset="moniri", train={"residual": "y-f"})
    assert "model.second_layer = 'gaussian'" in errors._residual_scope(config, initial)
    config, initial, _, _ = small(train={"residual": "y"}, model={"output_scale": 1.0})
    assert errors._residual_scope(config, initial) is None


@pytest.mark.parametrize(
    ("batch", "steps", "expected"),
    [
        # μ2(relu)μ2(σ*) = φ(0) ≠ 0: the bulk misses outliers below n0 = 32 d (exclusive).
        (31 * 50, 1.0, ["read trained_layer beside it"]),
        (32 * 50, 1.0, []),
        # The rms of η s a_j against 2 (exclusive), whatever the signs.
        (32 * 50, -2.5, ["rms 2.5 > 2 (train.step_size): beyond the tested regime"]),
        (32 * 50, -2.0, []),
        (
            4 * 50,
            3.0,
            [
                "the outliers of W0(I + ημ2Ĉ), so spiked is biased",
                "trained_layer beside it; the per-",
            ],
        ),
    ],
)
def test_spiked_warnings_at_their_thresholds(batch, steps, expected):
    config, initial, teacher, _ = small(train={"residual": "y", "batch_size": batch})
    residual = errors.residual_statistics(config, initial, teacher)
    warning = errors._spiked_warning(config, initial, residual, np.full(50, steps))
    if not expected:
        assert warning is None
    for text in expected:
        assert text in warning


@pytest.mark.parametrize(
    ("steps", "warned"),
    [
        (np.full(50, 1.0), True),  # Cui's equal steps: 1 · φ(0) · E[ỹ] ≈ 0.92
        (np.full(50, 0.3), True),  # ≈ 0.28
        (np.full(50, 0.18), False),  # ≈ 0.17, under 0.2
        (np.tile([1.0, -1.0], 25), False),  # random signs (moniri): the mean step is 0
    ],
)
def test_spiked_warns_when_the_residual_mean_enters_every_step_alike(steps, warned):
    """tanh(z1) + 3 with residual y − f: E[ỹ] = 3 − f̄ ≈ 2.3 here; the warning needs the same
    sign in every neuron's step, which moniri's a_j do not have."""
    config, initial, teacher, _ = small(
        target={"expression": "tanh(z1) + 3"}, train={"residual": "y-f", "batch_size": 32 * 50}
    )
    residual = errors.residual_statistics(config, initial, teacher)
    expected = float(np.mean(steps)) / np.sqrt(2 * np.pi) * residual.mean  # μ2(relu) = φ(0)
    warning = errors._spiked_warning(config, initial, residual, steps)
    assert (warning is not None) == warned
    if warned:
        assert warning == (
            f"the residual's mean E[ỹ] = {residual.mean:.3g} enters every neuron's step alike "
            f"(mean η_j · μ2(σ) · E[ỹ] = {expected:.3g}, above 0.2): the predicted bulk misses "
            "the structure of W0(I + ημ2E[ỹ](X0ᵀX0/n0 − I)), and spiked was measured off by "
            "−7 … +12 % there (Cui's setting); read trained_layer beside it"
        )


def test_a_missing_trained_network_is_named_as_the_reason():
    config, initial, teacher, _ = small()
    reason = predict_errors(config, initial, teacher).trained_layer.reason
    assert reason == (
        "no trained network was given (trained=None): trained_layer is conditional on the run's W1"
    )


def test_a_solver_failure_becomes_the_reason_of_every_variant():
    def failing():
        raise RuntimeError("the self-energy iteration did not converge in 3 steps")

    variants = errors._variants(failing, [0.1, 1.0], 2, warning="unused")
    assert len(variants) == 2
    for variant in variants:
        assert variant.errors is None and variant.warning is None
        assert variant.reason == (
            "the theory's solver failed: the self-energy iteration did not converge in 3 steps"
        )


def test_a_learning_curve_computes_only_the_variants_asked_for():
    config, initial, teacher, trained = small()
    skipped = "not computed: not among the variants asked for"
    (point,) = predict_learning_curve(config, initial, teacher, [100], trained, variants=["spiked"])
    assert point.random_features.reason == point.trained_layer.reason == skipped
    assert point.spiked.errors is not None
    with pytest.raises(ValueError) as err:
        predict_learning_curve(config, initial, teacher, [100], variants=["spiked", "all"])
    assert (
        str(err.value) == "variants: unknown 'all'; one of random_features, spiked, trained_layer"
    )
