"""The spectrum's small pieces against hand-built cases and direct computations: the outlier
rule and its constants at their edges, the mean spike, the naming of spikes, the probes, the
operator norm and top values against numpy's SVD, sums that add up, ζ = Xᵀy/n, and the
target's Hermite projections (closed forms)."""

import math
import warnings

import numpy as np
import pytest

from giantstep.activations import get_activation
from giantstep.data import CHUNK_ROWS, RIDGE, TRAIN, SampleStream
from giantstep.hermite import hermite
from giantstep.model import initialize
from giantstep.spectrum import (
    EXPLAINED_ALIGNMENT,
    GAP_FACTOR,
    MEAN_ALIGNMENT,
    SPACING_WINDOW,
    FeatureSums,
    Probes,
    SpectrumSum,
    TopSpectrum,
    analyse,
    classify,
    count_outliers,
    feature_sums,
    first_batch_zeta,
    mean_spike_index,
    operator_norm,
    target_coefficients,
    top_spectrum,
)
from giantstep.targets import Teacher
from giantstep.theory.bands import update_triplet


def bulk(n=30, top=1.0, spacing=0.01):
    """Evenly spaced values below ``top``: every gap is ``spacing``."""
    return top - spacing * np.arange(n)


def test_constants_of_the_outlier_rule():
    assert (GAP_FACTOR, SPACING_WINDOW, MEAN_ALIGNMENT, EXPLAINED_ALIGNMENT) == (8.0, 10, 0.5, 0.2)


def test_an_outlier_needs_a_gap_above_gap_factor_times_the_spacing_below():
    """With a bulk of spacing 0.01 below it, a value is an outlier when its gap to the next
    exceeds 8 × 0.01 (strictly): 0.0801 is, 0.0799 is not."""
    below = bulk()
    assert count_outliers(np.concatenate([[1.0801], below]), edge=0.5) == 1
    assert count_outliers(np.concatenate([[1.0799], below]), edge=0.5) == 0
    assert count_outliers(below, edge=0.5) == 0
    # Exactly 8 × the spacing (binary fractions: no rounding) is not enough.
    exact = np.concatenate([[3.0], 1.0 - 0.25 * np.arange(12)])
    assert count_outliers(exact, edge=-10.0) == 0
    assert count_outliers(np.concatenate([[3.0 + 2**-20], exact[1:]]), edge=-10.0) == 1


def test_outliers_must_be_above_the_edge_and_are_counted_to_the_last_one():
    """Two outliers above the edge: 2; the edge between them: 1 (counting stops at the first
    value at or below it); the edge at the second's value exactly: 1."""
    values = np.concatenate([[3.0, 2.0], bulk()])
    assert count_outliers(values, edge=0.5) == 2
    assert count_outliers(values, edge=2.5) == 1
    assert count_outliers(values, edge=2.0) == 1
    assert count_outliers(values, edge=3.0) == 0
    # An outlier below a value that is not one is still counted (J is the largest such j).
    values = np.concatenate([[2.05, 2.0], bulk()])
    assert count_outliers(values, edge=0.5) == 2


def test_the_spacing_is_the_median_of_the_window_of_gaps_below():
    """The spacing is the median of the SPACING_WINDOW = 10 gaps below the candidate: one
    large gap among them does not change it; the rule needs that many values below."""
    gaps = np.full(10, 0.01)
    gaps[3] = 0.5  # one large gap in the window: the median is still 0.01
    below = 1.0 - np.concatenate([[0.0], np.cumsum(gaps)])
    values = np.concatenate([[1.09], below, bulk(5, below[-1] - 0.01)])
    assert count_outliers(values, edge=1.05) == 1  # only 1.09 is a candidate
    gaps[:6] = 0.5  # most of the window large: the spacing is 0.5, 0.09 is no gap
    below = 1.0 - np.concatenate([[0.0], np.cumsum(gaps)])
    values = np.concatenate([[1.09], below, bulk(5, below[-1] - 0.01)])
    assert count_outliers(values, edge=1.05) == 0
    # Fewer than SPACING_WINDOW + 2 values: no candidate has its window.
    assert count_outliers(np.array([5.0, *bulk(10)]), edge=0.0) == 0
    assert count_outliers(np.array([5.0, *bulk(11)]), edge=0.0) == 1


def spectrum_with(cos2_first_column, values=None):
    k = len(cos2_first_column)
    cos2 = np.zeros((k, 3))
    cos2[:, 0] = cos2_first_column
    values = np.arange(k, 0, -1.0) if values is None else values
    return TopSpectrum(values, np.eye(k), cos2)


def test_the_mean_spike_is_the_value_best_aligned_with_ones_if_aligned_enough():
    """The index of the largest cos² with 1, when it is ≥ MEAN_ALIGNMENT = 0.5 (the bound
    included); None when μ_0(σ) = 0 (|μ_0| < 1e-9) or when no value is that aligned."""
    spectrum = spectrum_with([0.1, 0.7, 0.3])
    assert mean_spike_index(spectrum, 0.4) == 1
    assert mean_spike_index(spectrum, -0.4) == 1
    assert mean_spike_index(spectrum, 2e-9) == 1
    assert mean_spike_index(spectrum, 1e-9) == 1  # |μ_0| < 1e-9 is zero, 1e-9 is not
    assert mean_spike_index(spectrum, 5e-10) is None
    assert mean_spike_index(spectrum, 0.0) is None
    assert mean_spike_index(spectrum_with([0.1, 0.5, 0.3]), 0.4) == 1
    assert mean_spike_index(spectrum_with([0.1, 0.4999, 0.3]), 0.4) is None


NAMES_BETA = ["1", "He1(X̃β)", "He2(X̃β)", "X̃W0ᵀa"]
NAMES_ZETA = ["1", "He1(X̃β)", "He2(X̃β)", "He1(X̃ζ̂)", "He2(X̃ζ̂)", "(X̃ζ)^1", "(X̃ζ)^2", "X̃W0ᵀa"]


@pytest.mark.parametrize(
    ("cos2", "names", "kind"),
    [
        ([0.9, 0.3, 0.1, 0.0], NAMES_BETA, "degree 1"),
        ([0.0, 0.1, 0.6, 0.2], NAMES_BETA, "degree 2"),
        ([0.0, 0.1, 0.15, 0.3], NAMES_BETA, "network"),
        ([0.9, 0.19, 0.1, 0.05], NAMES_BETA, "unexplained"),  # the mean's probe does not count
        ([0.0, 0.2, 0.1, 0.05], NAMES_BETA, "degree 1"),  # EXPLAINED_ALIGNMENT included
        # With ζ the candidates are He_k(X̃ζ̂), not He_k(X̃β) nor (X̃ζ)^k.
        ([0.0, 0.9, 0.9, 0.1, 0.3, 0.9, 0.9, 0.0], NAMES_ZETA, "degree 2"),
        ([0.0, 0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.0], NAMES_ZETA, "unexplained"),
        ([0.0, 0.0, 0.0, 0.5, 0.1, 0.0, 0.0, 0.6], NAMES_ZETA, "network"),
    ],
)
def test_a_spike_is_named_by_its_best_aligned_candidate_probe(cos2, names, kind):
    assert classify(np.array(cos2), names, 2) == kind


def test_with_one_degree_the_candidates_are_he1_and_the_network():
    assert classify(np.array([0.0, 0.3, 0.1]), ["1", "He1(X̃ζ̂)", "X̃W0ᵀa"], 1) == "degree 1"
    assert classify(np.array([0.0, 0.1, 0.3]), ["1", "He1(X̃β)", "X̃W0ᵀa"], 1) == "network"


def designed_sums(after, before, n=400, width=40):
    """FeatureSums of F and F_0 (n, width) whose F/sqrt(n) have exactly the singular values
    ``after`` and ``before`` (descending), the first left vector along 1 (the mean spike), the
    second along the probe He1 and the third along X̃W0ᵀa; probes 1, He1(X̃β), X̃W0ᵀa."""
    rng = np.random.default_rng(5)
    left, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, width - 1))]))
    right, _ = np.linalg.qr(rng.standard_normal((width, width)))

    def features(values):
        return math.sqrt(n) * (left * values) @ right.T

    f, f0 = features(np.asarray(after)), features(np.asarray(before))
    probes = np.column_stack([np.ones(n), left[:, 1] * math.sqrt(n), left[:, 2] * math.sqrt(n)])
    zeros = np.zeros
    return FeatureSums(
        count=n, sum_sq=0.0, gram=f.T @ f, cross=zeros(width), probe_cross=f.T @ probes,
        gram0=f0.T @ f0, cross0=zeros(width), probe_cross0=f0.T @ probes,
        probe_gram=probes.T @ probes, probe_y=zeros(3), term_cross0=zeros((width, 0)),
        term_gram=zeros((0, 0)), term_y=zeros(0), term_probe=zeros((0, 3)),
        powers=zeros((width, 0)),
    )  # fmt: skip


def test_analyse_counts_spikes_above_the_initial_edge_among_the_reported_values():
    """Five learned spikes above a bulk of spacing 0.01 whose edge, like F_0's, is 1.0 (F_0's
    second value; its first is the mean spike): with top = 3 the count stops at the three
    values reported; with top = 6 it is five, and the first two are named."""
    names = ["1", "He1(X̃β)", "X̃W0ᵀa"]
    mean, width = 50.0, 40
    before = np.concatenate([[mean], bulk(width - 1)])
    after = np.concatenate([[mean, 10.0, 9.0, 8.0, 7.0, 6.0], bulk(width - 6)])
    sums = designed_sums(after, before, width=width)
    for top, spikes in [(3, 3), (6, 5), (8, 5)]:
        result = analyse(sums, names, 0.4, top, 1, None, 1.0)
        assert result.bulk_edge == pytest.approx(1.0, rel=1e-12)
        assert result.mean_spike == pytest.approx(mean, rel=1e-12)
        assert result.spikes == spikes == len(result.spike_alignment)
        np.testing.assert_allclose(result.singular_values, after[:top], rtol=1e-12)
        np.testing.assert_allclose(result.initial_singular_values, before[:top], rtol=1e-12)
        kinds = [a.kind for a in result.spike_alignment]
        assert kinds[:2] == ["degree 1", "network"]
        assert result.target_spikes == 1 and result.network_spikes == 1
    # Without a mean spike (μ_0 = 0) the edge is F_0's first value.
    assert analyse(sums, names, 0.0, 3, 1, None, 1.0).bulk_edge == pytest.approx(mean)


def test_probe_names_and_values():
    """The columns: 1, He_k(X̃β), then with ζ He_k(X̃ζ/‖ζ‖) and (X̃ζ)^k, then X̃W_0ᵀa."""
    rng = np.random.default_rng(0)
    beta, zeta, direction = rng.standard_normal((3, 4))
    x = rng.standard_normal((6, 4))
    plain = Probes(beta, None, direction, 2)
    assert plain.names == NAMES_BETA and plain.index("X̃W0ᵀa") == 3
    h = x @ beta
    expected = np.stack([np.ones(6), h, h**2 - 1, x @ direction], axis=1)
    np.testing.assert_allclose(plain(x), expected, rtol=1e-13)
    full = Probes(beta, zeta, direction, 2)
    assert full.names == NAMES_ZETA
    z = x @ zeta
    unit = z / np.linalg.norm(zeta)
    expected = np.stack(
        [np.ones(6), h, h**2 - 1, unit, unit**2 - 1, z, z**2, x @ direction], axis=1
    )
    np.testing.assert_allclose(full(x), expected, rtol=1e-12)
    x32 = x.astype(np.float32)
    assert full(x32).dtype == np.float64
    # Rows of a float32 run: the projections are float32 products (as the run's), then float64.
    h32 = (x32 @ beta.astype(np.float32)).astype(np.float64)
    z32 = (x32 @ zeta.astype(np.float32)).astype(np.float64)
    np.testing.assert_array_equal(full(x32)[:, 1], h32)
    np.testing.assert_array_equal(full(x32)[:, 5], z32)
    network32 = (x32 @ direction.astype(np.float32)).astype(np.float64)
    np.testing.assert_array_equal(full(x32)[:, -1], network32)


def test_operator_norm_and_top_values_are_numpys_singular_values():
    """From MᵀM: ‖M‖_op/sqrt(n) and the top singular values of M/sqrt(n), descending; asking
    for more values than columns gives them all; cos² of the left vectors with a probe p is
    (uᵀp)²/‖p‖²."""
    rng = np.random.default_rng(1)
    m = rng.standard_normal((40, 6)) @ np.diag([5, 3, 2, 1, 0.5, 0.1])
    p = rng.standard_normal((40, 2))
    u, s, _ = np.linalg.svd(m / math.sqrt(40), full_matrices=False)
    assert operator_norm(m.T @ m, 40) == pytest.approx(s[0], rel=1e-12)
    spectrum = top_spectrum(m.T @ m, m.T @ p, p.T @ p, 40, 3)
    np.testing.assert_allclose(spectrum.values, s[:3], rtol=1e-12)
    cos = (u[:, :3].T @ p) / np.linalg.norm(p, axis=0)
    np.testing.assert_allclose(spectrum.cos2, cos**2, atol=1e-12)
    every = top_spectrum(m.T @ m, m.T @ p, p.T @ p, 40, 10)
    np.testing.assert_allclose(every.values, s, rtol=1e-10)
    assert every.right.shape == (6, 6)


def test_a_zero_column_has_a_zero_singular_value_and_no_alignment():
    """A zero column of M: singular value 0 (not a NaN from rounding below 0), cos² 0."""
    m = np.zeros((10, 3))
    m[:, 0] = 1.0
    p = np.ones((10, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 is expected here, not a warning
        spectrum = top_spectrum(m.T @ m, m.T @ p, p.T @ p, 10, 3)
        zero_probe = top_spectrum(m.T @ m, np.zeros((3, 1)), np.zeros((1, 1)), 10, 3)
    np.testing.assert_allclose(spectrum.values, [1.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(spectrum.cos2[:, 0], [1.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_array_equal(zero_probe.cos2, np.zeros((3, 1)))
    assert operator_norm(np.zeros((3, 3)), 10) == 0.0
    # An eigenvalue of MᵀM rounded below zero is a singular value 0, not NaN.
    rounded = np.diag([4.0, -1e-17, -1e-16])
    values = top_spectrum(rounded, np.zeros((3, 0)), np.zeros((0, 0)), 1, 3).values
    np.testing.assert_array_equal(values, [2.0, 0.0, 0.0])
    # ... whose rounding-level product with a probe is not zero: x/0, quietly, and finite.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectrum = top_spectrum(rounded, np.array([[1.0], [1e-9], [0.0]]), np.eye(1), 1, 3)
    assert np.isfinite(spectrum.cos2).all()


def test_zeta_is_x_transpose_y_over_n():
    teacher = Teacher.draw(2, "z1 + z1*z2", 7, noise=0.1)
    stream = SampleStream(2, (TRAIN, 0), 7)
    zeta = first_batch_zeta(teacher, stream, n_samples=700, block_size=CHUNK_ROWS)
    block = stream.rows(0, 700)
    x = block.x.copy()
    _, y = teacher.labels(block)
    np.testing.assert_allclose(zeta, x.T @ y / 700, rtol=1e-12, atol=1e-15)


def moved_tanh_network():
    """tanh, d = 5, N = 6: (activation, initial network, teacher z1², network moved from it)."""
    act = get_activation("tanh")
    initial = initialize(1, 6, 5, activation=act)
    teacher = Teacher.draw(1, "z1**2", 5)
    return act, initial, teacher, initial.with_first_layer(initial.first_layer * 1.5 + 0.1)


def test_feature_sums_give_residual_grams_only_when_asked_and_report_progress():
    act, initial, teacher, network = moved_tanh_network()
    triplet = update_triplet(network.first_layer - initial.first_layer)
    probes = Probes(teacher.directions[0], np.ones(5), np.ones(5), 2)
    mu = act.hermite_coefficients(2)
    stream = SampleStream(1, (RIDGE, 0), 5)
    done = []
    sums = feature_sums(network, initial, teacher, stream, n_samples=1100, block_size=512,
                        probes=probes, triplet=triplet, mu=mu, progress=done.append)  # fmt: skip
    assert sums.residual_grams is None and sums.term_gram.shape == (2, 2)
    assert sum(done) == 3  # blocks of 512, 512 and 76 rows
    asked = feature_sums(network, initial, teacher, stream, n_samples=1100, block_size=512,
                         probes=probes, triplet=triplet, mu=mu, residual_grams=True)  # fmt: skip
    assert asked.residual_grams.shape == (2, 6, 6)


def test_feature_sums_of_float32_rows_are_computed_in_float32():
    """The weights are cast to the rows' dtype: F (and F_0) are float32 products, summed in
    float64 — within float32 rounding of, and not equal to, the float64 products."""
    act, initial, teacher, network = moved_tanh_network()
    probes = Probes(teacher.directions[0], None, np.ones(5), 2)
    stream = SampleStream(1, (RIDGE, 0), 5, dtype=np.float32)
    sums = feature_sums(network, initial, teacher, stream, n_samples=512, block_size=512,
                        probes=probes)  # fmt: skip
    x = stream.rows(0, 512).x.astype(np.float64)
    for gram, layer in ((sums.gram, network.first_layer), (sums.gram0, initial.first_layer)):
        f64 = act(x @ layer.T)
        np.testing.assert_allclose(gram, f64.T @ f64, rtol=1e-5)
        assert np.max(np.abs(gram - f64.T @ f64)) > 1e-10 * np.max(np.abs(gram))


def test_feature_sums_over_two_halves_add_up_to_the_sums_over_all():
    """Every sum is additive over rows: the sums of rows 0..512 and 512..1024 (added with +)
    are the sums of rows 0..1024, and the spike powers U stay those of the triplet."""
    act, initial, teacher, network = moved_tanh_network()
    triplet = update_triplet(network.first_layer - initial.first_layer)
    probes = Probes(teacher.directions[0], np.ones(5), np.ones(5), 2)
    mu = act.hermite_coefficients(2)
    stream = SampleStream(1, (RIDGE, 0), 5)
    keywords = dict(probes=probes, triplet=triplet, mu=mu, residual_grams=True)
    whole = feature_sums(network, initial, teacher, stream, n_samples=1024, block_size=1024,
                         **keywords)  # fmt: skip
    halves = feature_sums(network, initial, teacher, stream, n_samples=1024, block_size=512,
                          **keywords)  # fmt: skip
    assert whole.count == halves.count == 1024
    names = ["gram", "cross", "probe_cross", "gram0", "cross0", "probe_cross0", "probe_gram"]
    names += ["probe_y", "term_cross0", "term_gram", "term_y", "term_probe", "residual_grams"]
    for name in names:
        np.testing.assert_allclose(
            getattr(halves, name), getattr(whole, name), rtol=1e-10, atol=1e-10
        )
    assert halves.sum_sq == pytest.approx(whole.sum_sq, rel=1e-12)
    # The same by FeatureSums.__add__ of the sums of each half, as a spread sum adds them.
    summand = SpectrumSum(network.first_layer.T, initial.first_layer.T, act, teacher, probes,
                          triplet, mu, True)  # fmt: skip
    first, second = (summand.add(summand.zero(), stream.rows(a, a + 512)) for a in (0, 512))
    added = first + second
    assert added.count == 1024 and added.sum_sq == pytest.approx(whole.sum_sq, rel=1e-12)
    np.testing.assert_array_equal(added.powers, whole.powers)
    for name in names:
        np.testing.assert_allclose(
            getattr(added, name), getattr(whole, name), rtol=1e-10, atol=1e-10
        )
    plain = SpectrumSum(network.first_layer.T, initial.first_layer.T, act, teacher, probes)
    assert plain.max_degree == 0 and plain.zero().residual_grams is None
    unsplit = plain.add(plain.zero(), stream.rows(0, 512)) + plain.add(
        plain.zero(), stream.rows(512, 1024)
    )
    assert unsplit.residual_grams is None and unsplit.powers.shape == (6, 0)
    np.testing.assert_allclose(unsplit.gram, whole.gram, rtol=1e-10)
    np.testing.assert_allclose(whole.powers, triplet.left[:, None] ** np.array([1, 2]))
    with pytest.raises(ValueError, match="ℓ = 3 outside 0..2"):
        whole.statistics(3)
    with pytest.raises(ValueError, match="ℓ = -1 outside 0..2"):
        whole.probe_products(-1)
    np.testing.assert_allclose(whole.statistics(0).gram, whole.gram0)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("z1**3", [3.0, 0.0, 6.0, 0.0]),  # g³ = He3 + 3 He1: E[g³ He_k] = k! c_k
        ("He2(z1) + 0.5*z1", [0.5, 2.0, 0.0, 0.0]),
        ("abs(z1)", [0.0, 2 / math.sqrt(2 * math.pi), 0.0, -2 / math.sqrt(2 * math.pi)]),
    ],
)
def test_target_projections_are_its_hermite_moments(expression, expected):
    """E[σ*(z) He_k(z)], k = 1..K: closed forms (E[|g| He2] = 2φ(0), E[|g| He4] = −2φ(0));
    None for a target of rank 2."""
    projections = target_coefficients(Teacher.draw(0, expression, 5), 4)
    np.testing.assert_allclose(projections, expected, atol=1e-10)
    assert target_coefficients(Teacher.draw(0, "z1*z2", 5), 3) is None


def test_hermite_probe_of_the_teacher_direction_is_orthonormal_in_expectation():
    """A sanity check of the probes' normalisation: E[He_j(⟨β,x⟩) He_k(⟨β,x⟩)] = k! δ_jk for
    a unit β, on 20000 Gaussian rows (to a few standard errors)."""
    x = SampleStream(0, (RIDGE, 0), 3).rows(0, 20480).x
    beta = np.array([0.6, 0.8, 0.0])
    h = x @ beta
    gram = np.array([[np.mean(hermite(j, h) * hermite(k, h)) for k in (1, 2)] for j in (1, 2)])
    np.testing.assert_allclose(gram, np.diag([1.0, 2.0]), atol=0.1)
