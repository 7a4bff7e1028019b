"""The readout and the constants of the predictions against the mathematics: a whole run
against a dense reimplementation of SCIENCE.md §2, ridge against its objective, the label
noise, E[y²], μ_k of the target and γ against closed forms."""

import math

import numpy as np
import pytest
from scipy import integrate

import dense
from giantstep import run
from giantstep.activations import get_activation
from giantstep.config import CHUNK_ROWS
from giantstep.data import RIDGE, TEST, TRAIN, SampleStream
from giantstep.linalg import symmetric_eigh
from giantstep.model import initialize
from giantstep.readout import GramStatistics, ridge_path
from giantstep.targets import Teacher, parse_target
from giantstep.theory.spikes import direction_cosine

PHI0 = 1 / math.sqrt(2 * math.pi)

CONFIGS = {
    # One step of the true gradient, every exponent of η = c·n^α·N^γN·d^γd non-zero.
    "moniri": {
        "seed": 2, "dim": 40, "width": 30, "preset": "moniri", "activation": "relu",
        "target": {"expression": "z1 + He2(z1)/2", "noise": 0.3},
        "train": {"steps": 1, "batch_size": 700, "residual": "y-f",
                  "step_size": {"scale": 1.5, "batch_exponent": 0.3, "width_exponent": 0.5,
                                "dim_exponent": -0.25}},
        "readout": {"samples": 600, "ridge": [1e-3, 1e-1]}, "test": {"samples": 500},
        "compute": {"block_size": CHUNK_ROWS},
    },
    # Two correlation-loss steps on fresh batches, mean field, ±1 inputs.
    "dandi": {
        "seed": 4, "dim": 30, "width": 20, "preset": "dandi", "activation": "tanh",
        "target": {"expression": "z1 + z1*z2", "noise": 0.1},
        "data": {"distribution": "rademacher"},
        "train": {"steps": 2, "batch_size": 600, "residual": "y",
                  "step_size": {"scale": 2.0, "width_exponent": 1.0}},
        "readout": {"samples": 500, "ridge": [1e-2]}, "test": {"samples": 400},
    },
    # Random features on the sphere.
    "random-features": {
        "seed": 6, "dim": 30, "width": 25, "activation": "tanh",
        "target": {"expression": "tanh(z1)", "noise": 0.2}, "data": {"distribution": "sphere"},
        "train": {"steps": 0, "batch_size": 300}, "readout": {"samples": 400, "ridge": [1e-3, 1.0]},
        "test": {"samples": 300},
    },
}  # fmt: skip


def hand_step_size(c):
    s = c["train"].get("step_size", {})
    n, width, dim = c["train"]["batch_size"], c["width"], c["dim"]
    return (
        s.get("scale", 1.0)
        * n ** s.get("batch_exponent", 0.0)
        * width ** s.get("width_exponent", 0.0)
        * dim ** s.get("dim_exponent", 0.0)
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_run_equals_a_dense_reimplementation(name):
    """Errors, step size and alignments of giantstep.run against SCIENCE.md §2 done densely:
    W ← W − η ∇L on batch t, F = σ(X̃ Wᵀ) on the ridge set, â from the normal equations,
    errors (1/m)‖y − F â‖² on the ridge and the test set."""
    c = CONFIGS[name]
    result = run(c)
    seed, dim, width = c["seed"], c["dim"], c["width"]
    expression, noise = c["target"]["expression"], c["target"]["noise"]
    distribution = c.get("data", {}).get("distribution", "gaussian")
    activation, steps = c["activation"], c["train"]["steps"]
    # Only the initial layers and W* come from giantstep (their laws are tested elsewhere).
    network = initialize(
        seed, width, dim, activation=get_activation(activation), preset=c.get("preset", "moniri")
    )
    directions = Teacher.draw(seed, expression, dim, noise=noise).directions
    a, s = network.second_layer, network.output_scale
    eta = hand_step_size(c)
    assert result.step_size == pytest.approx(eta, rel=1e-13)

    def sample(kind, index, n):
        x, e = dense.rows(SampleStream(seed, (kind, index), dim, distribution=distribution), n)
        return x, dense.labels(x, e, directions, expression, noise)

    w0 = w = network.first_layer
    layers = [w]
    for t in range(steps):
        x, y = sample(TRAIN, t, c["train"]["batch_size"])
        w = w - eta * dense.gradient(w, a, s, x, y, activation, c["train"]["residual"])
        layers.append(w)
    sigma, _ = dense.SIGMA[activation]
    x_ridge, y_ridge = sample(RIDGE, 0, c["readout"]["samples"])
    x_test, y_test = sample(TEST, 0, c["test"]["samples"])
    features, test_features = sigma(x_ridge @ w.T), sigma(x_test @ w.T)
    for lam, errors in zip(c["readout"]["ridge"], result.errors, strict=True):
        coefficients = dense.ridge(features, y_ridge, lam)
        assert errors.ridge == lam
        train_error = np.mean((y_ridge - features @ coefficients) ** 2)
        test_error = np.mean((y_test - test_features @ coefficients) ** 2)
        assert errors.train_error == pytest.approx(train_error, rel=1e-8)
        assert errors.test_error == pytest.approx(test_error, rel=1e-8)

    assert len(result.alignment) == steps + 1
    for t, (record, layer) in enumerate(zip(result.alignment, layers, strict=True)):
        cosines = (layer @ directions.T) / np.linalg.norm(layer, axis=1, keepdims=True)
        np.testing.assert_allclose(
            record.direction_alignment, np.sqrt(np.mean(cosines**2, axis=0)), rtol=1e-9
        )
        if t:
            top_right = np.linalg.svd(layer - w0)[2][0]
            assert record.update_cosine == pytest.approx(abs(top_right @ directions[0]), rel=1e-8)


def ridge_objective(features, y, a, lam):
    return np.mean((y - features @ a) ** 2) + lam * a @ a


@pytest.mark.parametrize("rows", [60, 25])  # more and fewer rows than features
def test_ridge_minimises_its_objective(rows):
    """â(λ) = argmin (1/m)‖y − F a‖² + λ‖a‖²: the objective's gradient
    −(2/m)Fᵀ(y − Fâ) + 2λâ vanishes, every perturbation raises it, the normal equations
    (FᵀF/m + λI) â = Fᵀy/m hold, ‖â‖ shrinks and the fit worsens as λ grows."""
    rng = np.random.default_rng(rows)
    features = rng.standard_normal((rows, 40)) + 0.5
    y = features[:, :3] @ [1.0, -2.0, 0.5] + 0.3 * rng.standard_normal(rows)
    stats = GramStatistics.zeros(40)
    stats.add(features[:17], y[:17])
    stats.add(features[17:], y[17:])
    ridges = [1e-4, 1e-2, 1.0, 10.0]
    path = ridge_path(stats, ridges)
    for k, lam in enumerate(ridges):
        a = path[:, k]
        slope = -2 * features.T @ (y - features @ a) / rows + 2 * lam * a
        assert np.linalg.norm(slope) < 1e-9 * max(1.0, np.linalg.norm(features.T @ y) / rows)
        np.testing.assert_allclose(a, dense.ridge(features, y, lam), rtol=1e-7, atol=1e-10)
        best = ridge_objective(features, y, a, lam)
        for _ in range(5):
            nudged = a + 1e-3 * rng.standard_normal(40)
            assert ridge_objective(features, y, nudged, lam) > best
    errors = stats.mean_squared_error(path)
    np.testing.assert_allclose(errors, np.mean((y[:, None] - features @ path) ** 2, axis=0))
    assert np.all(np.diff(np.linalg.norm(path, axis=0)) < 0)
    assert np.all(np.diff(errors) > 0)


def test_ridge_is_finite_and_shrinks_at_a_ridge_as_small_as_rounding():
    """FᵀF/m is PSD, so for every λ > 0 each eigen-direction shrinks by 1/(e + λ) ≤ 1/λ and
    ‖â(λ)‖ ≤ ‖Fᵀy/m‖/λ — also when F has dependent columns and the eigensolver returns an
    eigenvalue e rounded below 0 (≈ −1e-16; which seeds do depends on the BLAS): at λ = −e
    that direction must not blow up."""
    negative = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        base = rng.standard_normal((50, 3))
        features = np.hstack([base, base @ rng.standard_normal((3, 2))])  # rank 3 of 5
        y = base @ [1.0, -1.0, 0.5]
        stats = GramStatistics.zeros(5)
        stats.add(features, y)
        lowest = symmetric_eigh(stats.gram / stats.count)[0][0]
        if lowest >= 0:
            continue
        negative += 1
        ridges = [-lowest, 2 * -lowest, 1e-8]
        path = ridge_path(stats, ridges)
        assert np.all(np.isfinite(path))
        bound = np.linalg.norm(features.T @ y / 50) / np.asarray(ridges)
        assert np.all(np.linalg.norm(path, axis=0) <= bound * (1 + 1e-12))
    assert negative >= 3  # the case under test: eigenvalues rounded below the PSD bound


@pytest.mark.parametrize("rank_deficient", ["fewer rows", "dependent columns"])
def test_ridge_at_a_tiny_ridge_is_the_minimum_norm_fit_without_rounding_blown_up(rank_deficient):
    """With fewer rows than features, λ = 1e-60 gave ‖â‖ = 3e44 and a training error of
    -2.8e72: the rounding that Fᵀy/m has along FᵀF's null space, divided by λ. It has no part
    there; â is the dual solution Fᵀ(FFᵀ/m + λI)⁻¹y/m, and the errors are >= 0."""
    rng = np.random.default_rng(1)
    if rank_deficient == "fewer rows":
        features = rng.standard_normal((10, 20))
    else:
        base = rng.standard_normal((40, 6))
        features = np.hstack([base, base @ rng.standard_normal((6, 14))])  # rank 6 of 20
    rows = len(features)
    y = rng.standard_normal(rows)
    stats = GramStatistics.zeros(20)
    stats.add(features, y)
    ridges = [1e-60, 1e-16, 1e-8, 1e-2]
    path = ridge_path(stats, ridges)
    for k, lam in enumerate(ridges):
        u, s, vt = np.linalg.svd(features, full_matrices=False)
        kept = s > 1e-12 * s[0]
        u, s, vt = u[:, kept], s[kept], vt[kept]
        dual = vt.T @ (s / (s**2 / rows + lam) * (u.T @ y)) / rows
        np.testing.assert_allclose(path[:, k], dual, rtol=1e-9, atol=1e-12)
    errors = stats.mean_squared_error(path)
    assert np.all(errors >= 0)
    np.testing.assert_allclose(errors, np.mean((y[:, None] - features @ path) ** 2, axis=0),
                               atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("ridges", [[-0.1], [0.0], [float("nan")], [], 0.1, [[0.1]]])
def test_ridge_values_must_be_a_list_of_positive_finite_numbers(ridges):
    stats = GramStatistics.zeros(2)
    stats.add(np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match="ridges: "):
        ridge_path(stats, ridges)
    with pytest.raises(ValueError, match="no rows"):
        ridge_path(GramStatistics.zeros(2), [0.1])


def test_label_noise_is_sigma_times_a_standard_normal():
    """y = g*(W* x) + σ_ε ε with ε ~ N(0, 1), independent of x, and σ_ε the configured value."""
    teacher = Teacher.draw(0, "z1 + z1*z2", 3, noise=0.7)
    block = SampleStream(0, (TRAIN, 0), 3).rows(0, 40_000)
    h, y = teacher.labels(block)
    np.testing.assert_allclose(h, block.x @ teacher.directions.T, rtol=1e-12)
    clean = h[:, 0] + h[:, 0] * h[:, 1]
    np.testing.assert_allclose(y - clean, 0.7 * block.noise, atol=1e-12)
    e = block.noise
    # Standard errors at 40 000 rows: 0.005 for the mean, 0.007 for the variance.
    assert abs(e.mean()) < 0.025 and e.var() == pytest.approx(1.0, abs=0.035)
    assert np.all(np.abs(block.x.T @ e / len(e)) < 0.025)
    noiseless = Teacher.draw(0, "z1 + z1*z2", 3)
    np.testing.assert_array_equal(noiseless.labels(block)[1], clean)


def quad(f):
    return integrate.quad(lambda g: f(g) * np.exp(-g * g / 2) * PHI0, -30, 30, epsabs=1e-13)[0]


def test_target_moments_against_closed_forms():
    """E[y²] = E[g*²] + σ_ε² and C_1 = E[g* h], exactly for polynomials, by quadrature else."""
    cases = {
        # E[(z1 + z1 z2)²] = E[z1²] + 2E[z1² z2] + E[z1² z2²] = 1 + 0 + 1
        "z1 + z1*z2": (2.0, [1.0, 0.0]),
        "z1 + He2(z1)/2": (1.5, [1.0]),
        "He3(z1)": (6.0, [0.0]),
        "He2(z1) + z2": (3.0, [0.0, 1.0]),
        "relu(z1)": (0.5, [0.5]),
        "tanh(z1)": (quad(lambda g: np.tanh(g) ** 2), [quad(lambda g: np.tanh(g) * g)]),
    }
    for expression, (second, linear) in cases.items():
        target = parse_target(expression)
        assert target.second_moment() == pytest.approx(second, abs=1e-9), expression
        assert target.second_moment(noise=0.4) == pytest.approx(second + 0.16, abs=1e-9)
        np.testing.assert_allclose(target.linear_coefficients(), linear, atol=1e-9)


def test_target_hermite_coefficients_of_a_run():
    """μ_k(σ*) = E[σ*(z) He_k(z)] reported with the spectrum: relu(z) has 1/2, φ(0), 0, −φ(0)
    (Stein: μ_k = φ(0) He_{k−2}(0) for k ≥ 2); z + He2(z)/2 has 1, 1, 0, 0."""
    config = {
        "dim": 20, "width": 16, "train": {"batch_size": 256, "residual": "y"},
        "readout": {"samples": 256}, "test": {"samples": 256},
        "spectrum": {"enabled": True, "top": 4, "max_degree": 4, "approximation": False},
    }  # fmt: skip
    expected = {"relu(z1)": [0.5, PHI0, 0.0, -PHI0], "z1 + He2(z1)/2": [1.0, 1.0, 0.0, 0.0]}
    for expression, mu in expected.items():
        config["target"] = {"expression": expression}
        projections = run(config).spectrum.target_projections
        np.testing.assert_allclose(projections, mu, atol=1e-9)


def test_gamma_is_the_formula_of_its_constants():
    """γ = μ_1(σ*)/sqrt(μ_1(σ*)² + E[y²]·d/n), with the label noise inside E[y²]."""
    mu1, second = quad(lambda g: np.tanh(g) * g), quad(lambda g: np.tanh(g) ** 2)
    config = {
        "dim": 40, "width": 10, "target": {"expression": "tanh(z1)", "noise": 0.5},
        "train": {"batch_size": 512}, "readout": {"samples": 256}, "test": {"samples": 256},
    }  # fmt: skip
    expected = mu1 / math.sqrt(mu1**2 + (second + 0.25) * 40 / 512)
    assert run(config).predicted_update_cosine == pytest.approx(expected, rel=1e-9)
    assert direction_cosine(-0.5, 2.0, 100, 400) == pytest.approx(0.5 / math.sqrt(0.75))
    config["target"] = {"expression": "z1 + z1*z2"}
    assert run(config).predicted_update_cosine is None  # γ is a single-index statement


def test_zeta_follows_beta_at_the_predicted_cosine():
    """The claim behind γ: ζ = Xᵀy/n has cos(ζ, β) → γ. At d = 200, n = 800, noise 0.5:
    γ = 1/sqrt(1 + 1.75/4) ≈ 0.834; four seeds average within 0.015 of it."""
    dim, n, noise, expression = 200, 800, 0.5, "z1 + He2(z1)/2"
    target = parse_target(expression)
    gamma = direction_cosine(1.0, target.second_moment(noise), dim, n)
    assert gamma == pytest.approx(1 / math.sqrt(1 + 1.75 * dim / n), rel=1e-12)
    cosines = []
    for seed in range(4):
        teacher = Teacher.draw(seed, expression, dim, noise=noise)
        x, e = dense.rows(SampleStream(seed, (TRAIN, 0), dim), n)
        zeta = x.T @ dense.labels(x, e, teacher.directions, expression, noise) / n
        cosines.append(zeta @ teacher.directions[0] / np.linalg.norm(zeta))
    assert np.mean(cosines) == pytest.approx(gamma, abs=0.015)


@pytest.mark.parametrize(("width", "dim"), [(6, 4), (520, 512)])
def test_the_forward_weights_are_in_the_blocks_dtype(width, dim):
    # float32 runs multiply float32 blocks by float32 weights (a float64 copy would make the
    # product float64). Small networks carry W* below W (h from the same product), large not.
    from giantstep.linalg import small_network
    from giantstep.readout import GramSum
    from giantstep.train import GradientSum

    network = initialize(0, width, dim, activation=get_activation("relu"))
    teacher = Teacher.draw(0, "z1", dim)
    summand = GramSum.of(network, teacher, np.float32)
    assert summand.weights.dtype == np.float32 and summand.width == width
    rows = [network.first_layer, teacher.directions]
    if not small_network(network.first_layer.size):
        rows = rows[:1]
    np.testing.assert_array_equal(summand.weights, np.vstack(rows).T.astype(np.float32))
    assert summand.weights.shape[1] == width + (1 if width == 6 else 0)
    gradient = GradientSum.of(network, teacher, "y-f", np.float32)
    assert gradient.weights.dtype == gradient.second_layer.dtype == np.float32
    if small_network(network.first_layer.size):
        np.testing.assert_array_equal(gradient.forward, np.vstack(rows).astype(np.float32))
        assert gradient.forward.dtype == np.float32
    else:
        assert gradient.forward is None


def test_the_small_networks_are_those_below_one_thread_weights():
    # N·d < 2^18: one BLAS thread, the labels' h in the forward product, blocks summed in
    # parts; at 2^18 none of them (one threshold for all, exclusive).
    import contextlib

    from giantstep.linalg import ONE_THREAD_WEIGHTS, blas_threads_for, small_network

    assert ONE_THREAD_WEIGHTS == 1 << 18
    for weights, small in ((ONE_THREAD_WEIGHTS - 1, True), (ONE_THREAD_WEIGHTS, False)):
        assert small_network(weights) is small
        one_thread = not isinstance(blas_threads_for(weights), contextlib.nullcontext)
        assert one_thread is small


def test_ridge_of_one_row_and_of_tiny_features():
    """One row is a ridge set (rank 1); features of size 1e-12 keep their directions: the
    null-space tolerance is relative to FᵀF's largest eigenvalue."""
    stats = GramStatistics.zeros(2)
    stats.add(np.array([[1.0, 2.0]]), np.array([3.0]))
    a = ridge_path(stats, [0.5])[:, 0]
    f = np.array([[1.0, 2.0]])
    np.testing.assert_allclose(a, f.T @ np.linalg.solve(f @ f.T + 0.5, [3.0]), rtol=1e-12)
    tiny = GramStatistics.zeros(2)
    features = 1e-12 * np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    tiny.add(features, np.array([1.0, 2.0, 3.0]) * 1e-12)
    lam = 1e-30
    want = np.linalg.solve(
        features.T @ features / 3 + lam * np.eye(2), features.T @ [1e-12, 2e-12, 3e-12] / 3
    )
    np.testing.assert_allclose(ridge_path(tiny, [lam])[:, 0], want, rtol=1e-9)
