"""Moniri et al.'s spikes against the mathematics: the band rule over its whole list, on its
edges and for activations missing a Hermite coefficient; the outlier rule pinned from both
sides on constructed spectra; measured counts against the band rule; F = F_1 exactly when σ
is linear."""

import math
from fractions import Fraction

import numpy as np
import pytest

from giantstep import run
from giantstep.activations import get_activation
from giantstep.config import CHUNK_ROWS
from giantstep.data import RIDGE, SampleStream
from giantstep.model import initialize
from giantstep.render import spectrum_summary
from giantstep.spectrum import Probes, count_outliers, feature_sums, operator_norm
from giantstep.targets import Teacher
from giantstep.theory.bands import (
    band_index,
    bands,
    predicted_spikes,
    spiking_degrees,
    update_triplet,
)

#: All μ_k non-zero (e.g. σ = exp: μ_k = e^{1/2} for every k).
EVERY = np.full(13, math.exp(0.5))


def terms_below(alpha: Fraction) -> int:
    """ℓ(α): the number of k with (k−1)/(2k) < α, i.e. k < 1/(1 − 2α) (α < 1/2)."""
    bound = 1 / (1 - 2 * alpha)
    return math.ceil(bound) - 1


@pytest.mark.parametrize("max_degree", [1, 2, 5, 9])
def test_every_band_has_its_edges_and_terms(max_degree):
    """Bands ℓ = 1..K: (ℓ−1)/(2ℓ) < α < ℓ/(2ℓ+2), terms 1..ℓ, each band starting where the
    last one ends; the first four are SCIENCE.md's (0,1/4), (1/4,1/3), (1/3,3/8), (3/8,2/5)."""
    listed = bands(EVERY[: max_degree + 1])
    assert len(listed) == max_degree
    assert [b.ell for b in listed] == list(range(1, max_degree + 1))
    for b in listed:
        assert b.lower == Fraction(b.ell - 1, 2 * b.ell)
        assert b.upper == Fraction(b.ell, 2 * b.ell + 2)
        assert b.degrees == tuple(range(1, b.ell + 1)) and b.spikes == b.ell
    for below, above in zip(listed, listed[1:], strict=False):
        assert below.upper == above.lower
    science = [(0, Fraction(1, 4)), (Fraction(1, 4), Fraction(1, 3)),
               (Fraction(1, 3), Fraction(3, 8)), (Fraction(3, 8), Fraction(2, 5))]  # fmt: skip
    assert [(b.lower, b.upper) for b in listed[:4]] == science[:max_degree]


def test_band_index_inside_bands_and_exactly_on_their_edges():
    """Inside a band ℓ(α) = ⌈1/(1−2α)⌉ − 1; on an edge (k−1)/(2k) the lower band, flagged;
    α = 0 is the edge of the first term (no term yet, on the boundary)."""
    assert band_index(0.0) == (0, True)
    # Rounding noise is on the edge too, at 0 where a relative tolerance sees nothing.
    assert band_index(1e-13) == (0, True) and band_index(0.25 - 1e-13) == (1, True)
    assert predicted_spikes(0.0, EVERY) == 0
    assert predicted_spikes(0.0, EVERY[:1]) == 0  # ℓ = 0 needs no coefficient beyond μ_0
    for ell in range(1, 12):
        lower, upper = Fraction(ell - 1, 2 * ell), Fraction(ell, 2 * ell + 2)
        middle = (lower + upper) / 2
        assert band_index(float(middle)) == (ell, False) == (terms_below(middle), False)
        assert band_index(float(upper)) == (ell, True)
        assert predicted_spikes(float(middle), EVERY) == ell
    for alpha in (Fraction(1, 10), Fraction(3, 10), Fraction(9, 20), Fraction(197, 400)):
        assert band_index(float(alpha))[0] == terms_below(alpha)
    for bad in (-0.01, 0.5, 0.7):
        with pytest.raises(ValueError, match="α"):
            band_index(bad)


#: Spikes per band ℓ = 1..9 of activations with vanishing coefficients:
#: tanh has μ_k = 0 for even k; relu μ_k = 0 for odd k ≥ 3; abs and He2 have μ_1 = 0 (no
#: update at all, so no spike even where μ_2 ≠ 0); He3 has μ_1 = 0 too.
COUNTS = {
    "tanh": [1, 1, 2, 2, 3, 3, 4, 4, 5],
    "relu": [1, 2, 2, 3, 3, 4, 4, 5, 5],
    "abs": [0] * 9,
    "He2": [0] * 9,
    "He3": [0] * 9,
    "poly(0, 1, 0, 1)": [1, 1, 2, 2, 2, 2, 2, 2, 2],  # x + x³: μ_1 = 4, μ_3 = 6, nothing else
    "sigmoid": [1, 1, 2, 2, 3, 3, 4, 4, 5],  # σ − 1/2 is odd
}


@pytest.mark.parametrize("activation", list(COUNTS))
def test_band_counts_of_activations_missing_coefficients(activation):
    mu = get_activation(activation).hermite_coefficients(9)
    listed = bands(mu)
    assert [b.spikes for b in listed] == COUNTS[activation]
    for b in listed:
        middle = float((b.lower + b.upper) / 2)
        assert predicted_spikes(middle, mu) == b.spikes
        assert all(abs(mu[k]) > 1e-6 for k in b.degrees)
    with pytest.raises(ValueError, match=r"need μ_0\.\.μ_10, got 10"):
        spiking_degrees(10, mu)


def test_band_index_near_one_half_is_found_at_once():
    """ℓ was found by a loop over k: α = 1/2 − 1e-9 took minutes. Inside a band it is
    ⌈1/(1−2α)⌉ − 1, whatever its size."""
    for ell in (10**3, 10**4):
        middle = (Fraction(ell - 1, 2 * ell) + Fraction(ell, 2 * ell + 2)) / 2
        assert band_index(float(middle)) == (ell, False) == (terms_below(middle), False)
    ell, _ = band_index(0.5 - 1e-9)  # bands narrower than the edges' tolerance: on an edge
    assert abs(ell - 5e8) < 1e3


@pytest.mark.parametrize("activation, zero_degrees", [("tanh", "even"), ("relu", "odd")])
def test_zero_coefficients_up_to_the_last_resolved_degree_do_not_spike(activation, zero_degrees):
    """From k ≈ 20 the rounding of a zero μ_k (tanh's even ones, relu's odd ones) is above
    1e-9: at ℓ = 49 they counted as spiking degrees. Bands are predicted up to the last degree
    whose rounding bound is below 1e-9 (16 for tanh), zeros measured against that bound."""
    act = get_activation(activation)
    mu, rounding = act.hermite_coefficients(16), act.hermite_rounding(16)
    assert act.first_lost_degree(16) is None and act.first_lost_degree(22) in (17, 18)
    degrees = spiking_degrees(16, mu, rounding)
    odd = tuple(range(1, 17, 2))
    assert degrees == (odd if zero_degrees == "even" else (1, *range(2, 17, 2)))
    assert predicted_spikes(0.4697, mu, rounding) == len(degrees)  # ℓ(0.4697) = 16
    # A μ_k within its rounding of zero is zero, though above the absolute 1e-9.
    noisy = np.array([0.0, 1.0, 2e-8, 1.0])
    assert spiking_degrees(3, noisy) == (1, 2, 3)
    assert spiking_degrees(3, noisy, np.array([0.0, 0.0, 1e-9, 0.0])) == (1, 3)


def bulk(top=1.0, spacing=0.01, size=30):
    return top - spacing * np.arange(size)


def test_outlier_rule_is_pinned_between_gap_factors_7_5_and_8_5():
    """An outlier's gap must exceed 8 times the bulk's spacing: on a bulk of spacing δ a value
    8.5δ above it is one, 7.5δ above is not — a looser (≤ 7.5) or stricter (≥ 8.5) rule fails."""
    delta = 0.01
    assert count_outliers(np.concatenate([[1.0 + 8.5 * delta], bulk()]), 0.95) == 1
    assert count_outliers(np.concatenate([[1.0 + 7.5 * delta], bulk()]), 0.95) == 0
    # Scale-free: the same picture at another spacing and level.
    assert count_outliers(np.concatenate([[4.0 + 8.5e-3], bulk(4.0, 1e-3)]), 3.9) == 1
    assert count_outliers(np.concatenate([[4.0 + 7.5e-3], bulk(4.0, 1e-3)]), 3.9) == 0


def test_outlier_rule_counts_through_the_last_separated_value():
    """J is the largest j whose gap is an outlier's: two spikes close to each other above a
    wide gap are both counted; a bulk value with a wide gap above it is not."""
    delta = 0.01
    pair = np.concatenate([[1.3, 1.3 - 0.5 * delta], bulk()])
    assert count_outliers(pair, 0.95) == 2
    assert count_outliers(np.concatenate([[2.0, 1.2], bulk()]), 0.95) == 2
    # Only values above F_0's edge count: the same spectrum with the edge above the spike.
    assert count_outliers(np.concatenate([[1.2], bulk()]), 1.2) == 0
    assert count_outliers(np.concatenate([[1.2], bulk()]), 1.1999) == 1


def test_bulk_spacing_is_a_median():
    """The bulk's spacing is the median of the gaps below, so one wide gap deeper down (below
    the edge) does not hide a spike: a mean of the window would be 3.9δ and miss it."""
    delta = 0.01
    values = np.concatenate([[1.0 + 10 * delta], bulk(size=5), bulk(0.96 - 30 * delta, size=30)])
    assert count_outliers(values, 0.975) == 1


def test_bulk_spacing_is_the_median_of_the_ten_gaps_below():
    """The spacing is the median of the SPACING_WINDOW = 10 gaps below the candidate. Below
    the outlier come five gaps δ, then gaps 3δ: the median of ten is 2δ (≤ 9 gaps: δ; ≥ 11:
    3δ). A gap of 20δ is an outlier's (> 16δ, not > 24δ), one of 12δ is not (> 8δ only)."""
    delta = 0.01
    gaps = np.array([delta] * 5 + [3 * delta] * 20)
    below = 1.0 - np.concatenate([[0.0], np.cumsum(gaps)])
    assert count_outliers(np.concatenate([[1.0 + 20 * delta], below]), 1.05) == 1
    assert count_outliers(np.concatenate([[1.0 + 12 * delta], below]), 1.05) == 0


def moniri_config(alpha, seed, activation):
    """One correlation-loss step, η = 2·n^α, at d = N = 300, n = 8d: the second spike's gap
    is 18–50 times the bulk spacing and no bulk gap is above 8 (checked over 8 seeds)."""
    return {
        "seed": seed, "dim": 300, "width": 300, "activation": activation,
        "target": {"expression": "z1 + He2(z1)/2"},
        "train": {"batch_size": 2400, "residual": "y",
                  "step_size": {"scale": 2.0, "batch_exponent": alpha}},
        "readout": {"samples": 2400, "ridge": [1e-3]}, "test": {"samples": 256},
        "spectrum": {"enabled": True, "top": 8, "max_degree": 2, "approximation": False},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("activation", "alpha", "band", "spikes"),
    [("relu", 0.2, 1, 1), ("relu", 0.3, 2, 2), ("tanh", 0.3, 2, 1)],
)
def test_measured_spikes_follow_the_band_rule(activation, alpha, band, spikes):
    """Inside a band the measured spike count is the rule's, seed after seed; the k-th spike
    is the degree-k one; tanh (μ_2 = 0) has one spike in the second band; relu's mean spike
    (μ_0 ≠ 0) is reported apart, tanh has none."""
    for seed in range(3):
        s = run(moniri_config(alpha, seed, activation)).spectrum
        assert (s.band, s.on_band_boundary, s.predicted_spikes) == (band, False, spikes)
        assert s.spikes == spikes, (seed, s.singular_values)
        assert [a.kind for a in s.spike_alignment] == [f"degree {k}" for k in (1, 2)[:spikes]]
        assert (s.mean_spike is not None) == (activation == "relu")


def test_linear_activation_is_its_own_spiked_approximation():
    """With σ(x) = x the gradient σ' ⊙ (r aᵀ) is r aᵀ, so W_1 − W_0 = (η s/n) a (Xᵀr)ᵀ is
    exactly rank one and F = X̃W_1ᵀ = F_0 + (X̃v) s uᵀ = F_1: ‖F − F_1‖ is rounding."""
    for residual in ("y", "y-f"):
        config = moniri_config(0.3, 0, "linear")
        config.update(dim=60, width=50)
        config["train"].update(batch_size=512, residual=residual)
        config["readout"]["samples"] = 512
        config["spectrum"].update(approximation=True, max_degree=2)
        result = run(config)
        s = result.spectrum
        assert s.approximation_error[0] < 1e-10 * s.singular_values[0]
        np.testing.assert_allclose(
            s.approximation_singular_values[0], s.singular_values[:8], rtol=1e-9
        )
        (f_1,) = [e for e in s.approximation_ridge_errors if e.ell == 1]
        assert f_1.train_error == pytest.approx(result.errors[0].train_error, rel=1e-8)
        assert f_1.test_error == pytest.approx(result.errors[0].test_error, rel=1e-8)


def test_quadratic_activation_meets_its_taylor_expansion():
    """σ(x) = x + x²/2 has σ' − μ_1 = x and σ'' = μ_2 = 1, so a rank-one update
    W_1 = W_0 + c u vᵀ gives, with P = X̃W_0ᵀ and T = c (X̃v) uᵀ, exactly
    F = σ(P + T) = F_0 + μ_1 T + (μ_2/2) T^{∘2} + P ⊙ T. Hence F_2 = F − P ⊙ T and
    F_1 = F_2 − T^{∘2}/2: the 1/k!, the Hadamard powers of u and the scale c of F_ℓ are pinned
    by Taylor's theorem, not by the formula typed again."""
    width, dim, rows = 15, 20, 600
    activation = get_activation("poly(0, 1, 0.5)")
    mu = activation.hermite_coefficients(2)
    np.testing.assert_allclose(mu, [0.5, 1.0, 1.0], atol=1e-12)
    initial = initialize(1, width, dim, activation=activation, preset="moniri")
    teacher = Teacher.draw(1, "z1", dim)
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(width), rng.standard_normal(dim)
    u, v, c = u / np.linalg.norm(u), v / np.linalg.norm(v), 3.0
    network = initial.with_first_layer(initial.first_layer + c * np.outer(u, v))
    triplet = update_triplet(network.first_layer - initial.first_layer)
    assert triplet.value == pytest.approx(c, rel=1e-12)
    stream = SampleStream(1, (RIDGE, 0), dim)
    probes = Probes(
        beta=teacher.directions[0],
        zeta=None,
        network_direction=initial.first_layer.T @ initial.second_layer,
        max_degree=2,
    )
    sums = feature_sums(network, initial, teacher, stream=stream, n_samples=rows,
                        block_size=CHUNK_ROWS, probes=probes, triplet=triplet, mu=mu,
                        residual_grams=True)  # fmt: skip
    x = stream.rows(0, rows).x.copy()
    p, t = x @ initial.first_layer.T, c * np.outer(x @ v, u)
    features = p + t + (p + t) ** 2 / 2
    f_2 = features - p * t
    f_1 = f_2 - t**2 / 2
    for ell, f_ell in ((1, f_1), (2, f_2)):
        gram = sums.statistics(ell).gram
        np.testing.assert_allclose(gram, f_ell.T @ f_ell, rtol=1e-10, atol=1e-9)
        dense_norm = np.linalg.norm(features - f_ell, 2) / np.sqrt(rows)
        streamed = operator_norm(sums.residual_grams[ell - 1], rows)
        assert streamed == pytest.approx(dense_norm, rel=1e-9)


@pytest.mark.parametrize("alpha, ell", [(0.499, 499), (0.49, 49)])
def test_a_band_past_the_computed_coefficients_predicts_nothing_but_the_run_goes_on(alpha, ell):
    """At α = 0.499 the run stopped on a bare 'max_degree 499 is above the limit'; at 0.49 it
    predicted 39 spikes for tanh's 25, counting even μ_k lost in rounding as non-zero."""
    result = run({"dim": 30, "width": 20, "activation": "tanh",
                  "train": {"batch_size": 512, "step_size": {"batch_exponent": alpha}},
                  "readout": {"samples": 512}, "test": {"samples": 256},
                  "spectrum": {"enabled": True}})  # fmt: skip
    assert result.spectrum.predicted_spikes is None
    assert result.spectrum.band == ell
    assert f"band rule predicts nothing at ℓ = {ell}" in spectrum_summary(result.spectrum)


def test_a_polynomial_activation_has_zero_rounding_at_every_degree():
    act = get_activation("He3")
    np.testing.assert_array_equal(act.hermite_rounding(5), np.zeros(6))
    assert act.first_lost_degree(128) is None
    assert spiking_degrees(5, act.hermite_coefficients(5), act.hermite_rounding(5)) == ()
