"""The streamed pipeline against dense computations, and its independence of the block size."""

import numpy as np
import pytest

import dense
from giantstep import ConfigError, DivergenceError, run
from giantstep.activations import get_activation
from giantstep.config import validate_config
from giantstep.data import CHUNK_ROWS, RIDGE, TRAIN, SampleStream
from giantstep.model import initialize
from giantstep.readout import GramStatistics, feature_statistics, ridge_path
from giantstep.targets import Teacher
from giantstep.train import gradient

DIM, WIDTH, ROWS = 24, 17, 1000  # ROWS is deliberately not a multiple of the block size


def small_setup(activation="tanh", preset="moniri", expression="z1 + z1*z2"):
    network = initialize(3, WIDTH, DIM, activation=get_activation(activation), preset=preset)
    teacher = Teacher.draw(3, expression, DIM, noise=0.3)
    return network, teacher


def dense_rows(stream, n):
    block = stream.rows(0, n)
    return block.x.copy(), block


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher", "sphere"])
def test_rows_do_not_depend_on_block_size(distribution):
    stream = SampleStream(7, (TRAIN, 2), DIM, distribution=distribution)
    reference = stream.rows(0, ROWS).x.copy()
    for size in (CHUNK_ROWS, 2 * CHUNK_ROWS, 4 * CHUNK_ROWS):
        parts = [b.x.copy() for b in stream.blocks(ROWS, size)]
        np.testing.assert_array_equal(np.concatenate(parts), reference)


def test_distributions_have_their_shape():
    sphere = SampleStream(1, (TRAIN, 0), DIM, distribution="sphere").rows(0, 300).x
    np.testing.assert_allclose(np.linalg.norm(sphere, axis=1), np.sqrt(DIM), rtol=1e-12)
    signs = SampleStream(1, (TRAIN, 0), DIM, distribution="rademacher").rows(0, 300).x
    assert set(np.unique(signs)) == {-1.0, 1.0}
    gauss = SampleStream(1, (TRAIN, 0), 2000, distribution="gaussian").rows(0, 512).x
    assert abs(gauss.mean()) < 0.01 and abs(gauss.var() - 1) < 0.01


def test_streams_and_seeds_are_independent():
    a = SampleStream(1, (TRAIN, 0), DIM).rows(0, 256).x
    b = SampleStream(1, (TRAIN, 1), DIM).rows(0, 256).x
    c = SampleStream(2, (TRAIN, 0), DIM).rows(0, 256).x
    assert not np.allclose(a, b) and not np.allclose(a, c)


@pytest.mark.parametrize("residual", ["y-f", "y"])
@pytest.mark.parametrize("preset", ["moniri", "dandi"])
def test_streamed_gradient_equals_the_derivative_of_the_loss(residual, preset):
    """Every entry of the streamed gradient, for three block sizes, against the exact
    derivative of L = (1/2n)‖y − f‖² (residual "y-f") or of the correlation loss −(1/n)yᵀf
    (residual "y") by complex steps: a reference that never types the gradient formula."""
    network, teacher = small_setup(preset=preset)
    stream = SampleStream(5, (TRAIN, 0), DIM)
    x, noise = dense.rows(stream, ROWS)
    y = dense.labels(x, noise, teacher.directions, "z1 + z1*z2", 0.3)
    w, a, s = network.first_layer, network.second_layer, network.output_scale
    exact = dense.complex_step_gradient(w, a, s, x, y, "tanh", residual)
    for size in (CHUNK_ROWS, 2 * CHUNK_ROWS, 4 * CHUNK_ROWS):
        streamed = gradient(network, teacher, stream, n_samples=ROWS, block_size=size,
                            residual=residual)  # fmt: skip
        np.testing.assert_allclose(streamed, exact, rtol=1e-10, atol=1e-13)


def test_streamed_gram_and_errors_equal_dense():
    network, teacher = small_setup(activation="relu")
    stream = SampleStream(5, (RIDGE, 0), DIM)
    x, block = dense_rows(stream, ROWS)
    _, y = teacher.labels(block)
    features = np.maximum(x @ network.first_layer.T, 0)
    stats = feature_statistics(network, teacher, stream, n_samples=ROWS, block_size=CHUNK_ROWS)
    np.testing.assert_allclose(stats.gram, features.T @ features, rtol=1e-10)
    np.testing.assert_allclose(stats.cross, features.T @ y, rtol=1e-10)
    assert stats.count == ROWS and np.isclose(stats.sum_sq, y @ y, rtol=1e-12)

    ridges = [1e-4, 1e-2, 1.0]
    coefficients = ridge_path(stats, ridges)
    for k, lam in enumerate(ridges):
        direct = np.linalg.solve(
            features.T @ features / ROWS + lam * np.eye(WIDTH), features.T @ y / ROWS
        )
        np.testing.assert_allclose(coefficients[:, k], direct, rtol=1e-8, atol=1e-10)
    dense_errors = np.mean((y[:, None] - features @ coefficients) ** 2, axis=0)
    np.testing.assert_allclose(stats.mean_squared_error(coefficients), dense_errors, rtol=1e-9)


def test_statistics_add_up():
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((50, 4)), rng.standard_normal(50)
    whole, first, second = GramStatistics.zeros(4), GramStatistics.zeros(4), GramStatistics.zeros(4)
    whole.add(f, y)
    first.add(f[:20], y[:20])
    second.add(f[20:], y[20:])
    total = first + second
    np.testing.assert_allclose(total.gram, f.T @ f, rtol=1e-12)
    np.testing.assert_allclose(total.cross, f.T @ y, rtol=1e-12)
    assert total.sum_sq == pytest.approx(y @ y, rel=1e-12) and total.count == 50
    np.testing.assert_allclose(whole.gram, f.T @ f, rtol=1e-12)


def tiny_config(**overrides):
    data = {
        "dim": 40,
        "width": 30,
        "target": {"expression": "z1 + He2(z1)/2", "noise": 0.1},
        "train": {"steps": 2, "batch_size": 1300, "step_size": {"scale": 1.0}},
        "readout": {"samples": 900, "ridge": [1e-3, 1e-1]},
        "test": {"samples": 700},
    }
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def numbers(result):
    errors = [(e.train_error, e.test_error) for e in result.errors]
    aligns = [a.direction_alignment + [a.update_cosine or 0.0] for a in result.alignment]
    return np.array(errors), np.array(aligns)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_run_does_not_depend_on_block_size(dtype):
    results = [
        numbers(run(tiny_config(compute__block_size=size, compute__dtype=dtype)))
        for size in (256, 512, 1536)
    ]
    rtol = 1e-10 if dtype == "float64" else 1e-4
    for errors, aligns in results[1:]:
        np.testing.assert_allclose(errors, results[0][0], rtol=rtol)
        np.testing.assert_allclose(aligns, results[0][1], rtol=rtol)


def test_run_result_shape_and_reuse_batch():
    result = run(tiny_config(train__reuse_batch=True, train__residual="y"))
    assert [a.step for a in result.alignment] == [0, 1, 2]
    assert result.alignment[0].update_cosine is None
    assert len(result.errors) == 2 and result.peak_memory_bytes > 0
    assert result.predicted_update_cosine is not None
    fresh = run(tiny_config(train__residual="y"))
    assert numbers(fresh)[0][0, 0] != numbers(result)[0][0, 0]


def test_step_size_formula():
    config = validate_config(
        tiny_config(
            train__step_size={
                "scale": 2.0,
                "batch_exponent": 0.5,
                "width_exponent": 1.0,
                "dim_exponent": -0.5,
            }
        )
    )
    assert config.step_size() == pytest.approx(2.0 * 1300**0.5 * 30 * 40**-0.5)


def test_divergence_names_the_step():
    config = tiny_config(
        activation="poly(0, 0, 0, 1)", train__step_size={"scale": 1e120}, train__steps=3
    )
    with pytest.raises(DivergenceError, match="step [12]"):
        run(config)


def test_memory_check_names_the_key():
    with pytest.raises(ConfigError, match="^width"):
        run(tiny_config(width=2_000_000))
    with pytest.raises(ConfigError, match="compute.block_size"):
        run(tiny_config(compute__block_size=256 * 10_000, compute__memory_limit=2**30))
    # Rows too long for any block size: dim is named, not the block size (which was the
    # largest part), with what the smallest block would still need; sizes beyond a TiB read.
    with pytest.raises(ConfigError, match=r"^dim: .* 1\.8 TiB .*smallest compute\.block_size "
                       r"\(256 rows\) it needs 121\.9 GiB.*— lower dim$"):  # fmt: skip
        run(tiny_config(dim=20_000_000, width=10, compute__memory_limit=2**30))
    with pytest.raises(ConfigError, match=r"^dim: .*e\+\d+ PiB"):
        run(tiny_config(dim=10**30, compute__memory_limit=2**30))


def test_one_step_direction_matches_theory():
    """SCIENCE.md §3: with residual y the update follows ζ, cos(ζ, β) → γ ≈ 0.853."""
    config = {
        "dim": 1000,
        "width": 1000,
        "activation": "relu",
        "target": {"expression": "z1 + He2(z1)/2"},
        "train": {
            "batch_size": 4000,
            "residual": "y",
            "step_size": {"scale": 2.0, "batch_exponent": 0.3},
        },
        "readout": {"samples": 512},
        "test": {"samples": 256},
    }
    result = run(config)
    gamma = result.predicted_update_cosine
    assert gamma == pytest.approx(1 / np.sqrt(1 + 1.5 * 1000 / 4000), rel=1e-9)
    assert abs(result.alignment[1].update_cosine - gamma) < 0.03
    config["train"]["residual"] = "y-f"
    tilted = run(config).alignment[1].update_cosine
    assert 0.68 < tilted < gamma - 0.05
