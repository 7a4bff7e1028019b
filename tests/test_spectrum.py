"""The streamed spectrum against a dense SVD of the whole F, and the band rule."""

import math
from fractions import Fraction

import numpy as np
import pytest

from giantstep import run
from giantstep.activations import get_activation
from giantstep.config import ExperimentConfig
from giantstep.data import CHUNK_ROWS, RIDGE, TRAIN, SampleStream
from giantstep.hermite import hermite
from giantstep.linalg import top_singular_triplet
from giantstep.model import initialize
from giantstep.spectrum import (
    Probes,
    count_outliers,
    feature_sums,
    first_batch_zeta,
    left_vectors,
    measure,
    operator_norm,
    top_spectrum,
)
from giantstep.targets import Teacher
from giantstep.theory.bands import band_index, bands, predicted_spikes, update_triplet
from giantstep.train import gradient
from here_client import HereClient

DIM, WIDTH, ROWS, K = 30, 19, 1100, 3


def stepped_setup(activation="softplus"):
    """A network after one large step (so the spikes are visible even at these sizes)."""
    act = get_activation(activation)
    initial = initialize(4, WIDTH, DIM, activation=act, preset="moniri")
    teacher = Teacher.draw(4, "z1 + He2(z1)/2", DIM, noise=0.2)
    batch = SampleStream(4, (TRAIN, 0), DIM)
    grad = gradient(initial, teacher, batch, n_samples=600, block_size=CHUNK_ROWS, residual="y")
    network = initial.with_first_layer(initial.first_layer - 6.0 * grad)
    zeta = first_batch_zeta(teacher, batch, n_samples=600, block_size=CHUNK_ROWS)
    probes = Probes(teacher.directions[0], zeta, initial.first_layer.T @ initial.second_layer, K)
    mu = act.hermite_coefficients(K)
    return initial, network, teacher, probes, mu, zeta


def test_streamed_spectrum_equals_dense_svd():
    initial, network, teacher, probes, mu, zeta = stepped_setup()
    triplet = update_triplet(network.first_layer - initial.first_layer)
    stream = SampleStream(4, (RIDGE, 0), DIM)
    block = stream.rows(0, ROWS)
    x = block.x.copy()
    _, y = teacher.labels(block)

    # Dense reference: the whole F, F_0, probes and F_ℓ.
    features = network.features(x)
    features0 = initial.features(x)
    z = x @ zeta
    h = x @ teacher.directions[0]
    dense_probes = np.stack(
        [np.ones(ROWS)]
        + [hermite(k, h) for k in (1, 2, 3)]
        + [hermite(k, z / np.linalg.norm(zeta)) for k in (1, 2, 3)]
        + [z**k for k in (1, 2, 3)]
        + [x @ initial.first_layer.T @ initial.second_layer],
        axis=1,
    )
    t = triplet.value * (x @ triplet.right)
    approx = [features0]
    for k in (1, 2, 3):
        term = mu[k] / math.factorial(k) * np.outer(t**k, triplet.left**k)
        approx.append(approx[-1] + term)

    u, s, vt = np.linalg.svd(features / math.sqrt(ROWS), full_matrices=False)
    for size in (CHUNK_ROWS, 2 * CHUNK_ROWS, 5 * CHUNK_ROWS):
        sums = feature_sums(
            network,
            initial,
            teacher,
            stream,
            n_samples=ROWS,
            block_size=size,
            probes=probes,
            triplet=triplet,
            mu=mu,
            residual_grams=True,
        )
        np.testing.assert_allclose(sums.probe_gram, dense_probes.T @ dense_probes, rtol=1e-10)
        spec = top_spectrum(sums.gram, sums.probe_cross, sums.probe_gram, sums.count, 6)
        np.testing.assert_allclose(spec.values, s[:6], rtol=1e-10)
        # Left vectors' squared cosines with the probes, from Fᵀp only.
        dense_cos = (u[:, :6].T @ dense_probes) / np.linalg.norm(dense_probes, axis=0)
        np.testing.assert_allclose(spec.cos2, dense_cos**2, atol=1e-10)
        # The approximation: Gram of F_ℓ assembled from rank-one sums, and ‖F − F_ℓ‖_op.
        for ell in (1, 2, 3):
            f_ell = approx[ell]
            stats = sums.statistics(ell)
            np.testing.assert_allclose(stats.gram, f_ell.T @ f_ell, rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(stats.cross, f_ell.T @ y, rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(
                sums.probe_products(ell), f_ell.T @ dense_probes, rtol=1e-10, atol=1e-9
            )
            dense_norm = np.linalg.norm(features - f_ell, 2) / math.sqrt(ROWS)
            assert operator_norm(sums.residual_grams[ell - 1], ROWS) == pytest.approx(
                dense_norm, rel=1e-10
            )
        np.testing.assert_allclose(sums.statistics("F0").gram, features0.T @ features0, rtol=1e-10)
        np.testing.assert_allclose(sums.probe_products(), features.T @ dense_probes, rtol=1e-10)
        np.testing.assert_allclose(sums.probe_y, dense_probes.T @ y, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(
            sums.probe_products("F0"), features0.T @ dense_probes, rtol=1e-10, atol=1e-9
        )

    # Left vectors on the rows, from a second pass, equal the dense ones up to sign.
    rows = left_vectors(
        network, stream, n_samples=ROWS, block_size=CHUNK_ROWS, spectrum=spec, count=sums.count
    )
    np.testing.assert_allclose(np.abs(rows.T @ u[:, :6]), np.eye(6), atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_left_vectors_are_the_same_spread_over_pieces_and_computed_in_the_rows_dtype(dtype):
    """A spread pass (pieces of 8 blocks, each writing its own rows) gives the local rows
    exactly, and a float32 stream's features are computed in float32."""
    network = stepped_setup()[1]
    stream = SampleStream(4, (RIDGE, 0), DIM, dtype=dtype)
    n = 9 * CHUNK_ROWS + 17  # two pieces, a short last block
    x = stream.rows(0, n).x.copy()
    features = network.features(x.astype(np.float64))
    spectrum = top_spectrum(features.T @ features, np.zeros((WIDTH, 0)), np.zeros((0, 0)), n, 4)
    local = left_vectors(network, stream, n_samples=n, block_size=CHUNK_ROWS,
                         spectrum=spectrum, count=n)  # fmt: skip
    client = HereClient()
    spread = left_vectors(network, stream, n_samples=n, block_size=CHUNK_ROWS,
                          spectrum=spectrum, count=n, executor=client)  # fmt: skip
    assert client.scattered  # the pass went through the executor
    np.testing.assert_array_equal(spread, local)
    weights = network.first_layer.T.astype(dtype)
    in_dtype = (network.activation(x @ weights) @ spectrum.right) / (spectrum.values * np.sqrt(n))
    tolerance = (1e-5 if dtype == np.float32 else 1e-12) * np.max(np.abs(local))
    np.testing.assert_allclose(local, in_dtype, rtol=0, atol=tolerance)
    if dtype == np.float32:  # float64 weights would give other numbers, at float32's rounding
        in_float64 = network.activation(x.astype(np.float64) @ network.first_layer.T)
        in_float64 = (in_float64 @ spectrum.right) / (spectrum.values * np.sqrt(n))
        assert np.max(np.abs(local - in_float64)) > 1e-9 * np.max(np.abs(local))


def test_update_triplet_is_the_top_singular_triplet():
    rng = np.random.default_rng(0)
    for shape in ((7, 12), (12, 7)):
        m = rng.standard_normal(shape)
        t = update_triplet(m)
        u, s, vt = np.linalg.svd(m)
        assert t.value == pytest.approx(s[0], rel=1e-12)
        top = s[0] * np.outer(u[:, 0], vt[0])
        np.testing.assert_allclose(np.outer(t.left, t.right) * t.value, top, atol=1e-12)


def test_the_top_triplet_of_a_zero_matrix_is_zero():
    """No singular direction: value 0, and finite vectors of norm at most one whose product
    is the zero matrix, not the 0/0 of a normalisation."""
    for shape in ((3, 5), (5, 3)):
        value, left, right = top_singular_triplet(np.zeros(shape))
        assert value == 0.0
        assert left.shape == (shape[0],) and right.shape == (shape[1],)
        assert np.all(np.isfinite(left)) and np.all(np.isfinite(right))
        assert np.linalg.norm(left) <= 1 + 1e-12 and np.linalg.norm(right) <= 1 + 1e-12
        assert not np.any(np.outer(left, right))


def test_band_rule():
    relu = get_activation("relu").hermite_coefficients(6)
    tanh = get_activation("tanh").hermite_coefficients(6)
    # The whole list, K = 6 bands: lower edges (ℓ−1)/(2ℓ), the last band's upper edge 6/14.
    listed = bands(relu)
    assert [b.lower for b in listed] == [0, Fraction(1, 4), Fraction(1, 3), Fraction(3, 8),
                                         Fraction(2, 5), Fraction(5, 12)]  # fmt: skip
    assert listed[-1].upper == Fraction(3, 7)
    assert [b.spikes for b in listed] == [1, 2, 2, 3, 3, 4]  # μ_3 = μ_5 = 0
    assert band_index(0.1) == (1, False) and band_index(0.3) == (2, False)
    assert band_index(0.25) == (1, True) and band_index(0.34) == (3, False)
    assert predicted_spikes(0.2, relu) == 1 and predicted_spikes(0.3, relu) == 2
    # relu has μ_3 = 0: the third band adds nothing; tanh has no even spikes.
    assert predicted_spikes(0.35, relu) == 2 and predicted_spikes(0.3, tanh) == 1
    assert predicted_spikes(0.35, tanh) == 2
    with pytest.raises(ValueError):
        band_index(0.5)


def test_outlier_rule_ignores_a_shifted_bulk():
    bulk = 1.2 - 0.01 * np.arange(40) ** 0.7  # an edge whose spacing shrinks inward
    assert count_outliers(bulk, edge=1.15) == 0  # above F_0's edge, but no gap: not a spike
    assert count_outliers(np.concatenate([[3.0, 1.6], bulk]), edge=1.15) == 2
    assert count_outliers(np.concatenate([[3.0], bulk]), edge=3.5) == 0


def test_run_reports_the_spectrum_and_streams_identically():
    config = {
        "dim": 120,
        "width": 100,
        "train": {"batch_size": 700, "residual": "y",
                  "step_size": {"scale": 2.0, "batch_exponent": 0.3}},
        "readout": {"samples": 700, "ridge": [1e-3]},
        "test": {"samples": 600},
        "spectrum": {"enabled": True, "top": 6},
    }  # fmt: skip
    results = []
    for size in (CHUNK_ROWS, 3 * CHUNK_ROWS):
        config["compute"] = {"block_size": size}
        results.append(run(config))
    a, b = (r.spectrum for r in results)
    np.testing.assert_allclose(a.singular_values, b.singular_values, rtol=1e-10)
    np.testing.assert_allclose(a.approximation_error, b.approximation_error, rtol=1e-10)
    assert a.spikes == b.spikes and a.predicted_spikes == 2 and a.mean_spike is not None
    # The readout errors of a run with the spectrum equal those without it.
    config["spectrum"] = {"enabled": False}
    plain = run(config)
    assert plain.spectrum is None
    assert plain.errors[0].test_error == pytest.approx(results[1].errors[0].test_error, rel=1e-10)


SMALL_SPECTRUM_RUN = {
    "dim": 40, "width": 30, "train": {"batch_size": 512, "residual": "y"},
    "readout": {"samples": 512}, "test": {"samples": 256},
    "spectrum": {"enabled": True, "max_degree": 2, "top": 8},
}  # fmt: skip


@pytest.mark.parametrize(
    ("train", "spectrum", "band", "approximated"),
    [
        ({"steps": 0}, {}, None, False),  # no update: no triplet, no ζ, no band
        ({"steps": 2}, {}, None, True),  # the band rule is about one step
        ({"step_size": {"batch_exponent": 0.5}}, {}, None, True),  # α outside [0, 1/2)
        ({"step_size": {"batch_exponent": 0.0}}, {}, 0, True),  # α = 0 is in: band 0
        ({"step_size": {"batch_exponent": 0.2}}, {"approximation": False}, 1, False),
        # Band 3 needs μ_3, one more than the probes' max_degree = 2 give.
        ({"step_size": {"batch_exponent": 0.35}}, {}, 3, True),
    ],
)
def test_the_measurement_predicts_and_approximates_only_where_it_applies(
    train, spectrum, band, approximated
):
    config = {**SMALL_SPECTRUM_RUN}
    config["train"] = {**config["train"], **train}
    config["spectrum"] = {**config["spectrum"], **spectrum}
    result = run(config).spectrum
    assert result.band == band
    if config["train"].get("steps", 1) == 0:
        assert result.update_singular_value == 0.0
    else:  # s_1 of W_T − W_0, a giant step's: well above zero
        assert result.update_singular_value > 0.1
    assert (result.predicted_spikes is None) == (band is None)
    assert (result.approximation_error is not None) == approximated
    assert (result.approximation_singular_values is not None) == approximated
    if approximated:  # ℓ = 1, 2: ‖F − F_ℓ‖ and F_ℓ's top values, for each ℓ
        assert len(result.approximation_error) == len(result.approximation_singular_values) == 2
        assert [len(v) for v in result.approximation_singular_values] == [8, 8]


def test_every_pass_of_the_measurement_goes_through_the_executor():
    """ζ's pass, the ridge set's and the test set's: three scattered summands, and the same
    result as here (each pass is one piece of at most 8 blocks: the same additions)."""
    initial, network, teacher, _, _, _ = stepped_setup()
    config = ExperimentConfig.model_validate({
        "dim": DIM, "width": WIDTH, "train": {"batch_size": 600},
        "readout": {"samples": ROWS}, "test": {"samples": 512}, "spectrum": {"enabled": True},
    })  # fmt: skip
    here = measure(config, initial, network, teacher, step_size=6.0)
    client = HereClient()
    spread = measure(config, initial, network, teacher, step_size=6.0, executor=client)
    assert len(client.scattered) == 3
    assert spread.result.model_dump() == here.result.model_dump()
    assert spread.probes.names == here.probes.names and "He1(X̃ζ̂)" in here.probes.names
    update = network.first_layer - initial.first_layer
    s_1 = np.linalg.svd(update, compute_uv=False)[0]
    assert here.result.update_singular_value == pytest.approx(s_1, rel=1e-10)


@pytest.mark.parametrize(("activation", "mean"), [("relu", True), ("tanh", False), ("abs", True)])
def test_the_mean_spike_is_looked_for_when_mu_0_is_not_zero(activation, mean):
    """μ_0 decides, not μ_1: abs has μ_1 = 0 and a mean spike, tanh μ_0 = 0 and none."""
    config = {**SMALL_SPECTRUM_RUN, "activation": activation}
    assert (run(config).spectrum.mean_spike is not None) == mean


def test_the_band_rule_is_given_beyond_the_probes_degree():
    # α = 0.41 is in band ℓ = 5, above spectrum.max_degree = 2: the rule still needs μ_0..μ_5.
    step_size = {"scale": 2.0, "batch_exponent": 0.41}
    result = run(
        {**SMALL_SPECTRUM_RUN, "train": {**SMALL_SPECTRUM_RUN["train"], "step_size": step_size}}
    )
    assert result.spectrum.band == 5
    assert result.spectrum.predicted_spikes == 3  # relu: degrees 1, 2, 4 (μ_3 = μ_5 = 0)
