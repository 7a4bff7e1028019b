"""Training against the mathematics: the gradient is the derivative of the loss it claims
(finite differences, complex steps), a small step goes downhill, the steps follow
``W_{t+1} = W_t − η ∇L_t`` on the batches they claim, and the presets are the distributions
SCIENCE.md §1 names. The references are in dense.py and share no code with giantstep."""

import warnings

import numpy as np
import pytest

from dense import SIGMA, complex_step_gradient, labels, loss, output, rows
from dense import gradient as dense_gradient
from giantstep.activations import get_activation
from giantstep.config import CHUNK_ROWS
from giantstep.data import TRAIN, SampleStream
from giantstep.model import initialize
from giantstep.targets import Teacher
from giantstep.train import (
    DivergenceError,
    GradientSum,
    NonFiniteActivationError,
    StepPlan,
    check_finite,
    giant_steps,
    gradient,
)
from here_client import HereClient

DIM, WIDTH, ROWS, NOISE = 24, 17, 700, 0.3
EXPRESSION = "z1 + z1*z2"


def setup(activation, preset, seed=3):
    network = initialize(seed, WIDTH, DIM, activation=get_activation(activation), preset=preset)
    teacher = Teacher.draw(seed, EXPRESSION, DIM, noise=NOISE)
    stream = SampleStream(seed, (TRAIN, 0), DIM)
    x, noise = rows(stream, ROWS)
    y = labels(x, noise, teacher.directions, EXPRESSION, NOISE)
    return network, teacher, stream, x, y


def parts(network):
    return network.second_layer, network.output_scale


@pytest.mark.parametrize("residual", ["y-f", "y"])
@pytest.mark.parametrize("preset", ["moniri", "dandi"])
@pytest.mark.parametrize("activation", ["tanh", "softplus", "sin", "poly(0.5, 1, -0.3, 0.2)"])
def test_gradient_is_the_derivative_of_its_loss(activation, preset, residual):
    """Central differences of L(W) = (1/2n)‖y − f_W(X)‖² (residual "y-f") or of the
    correlation loss L(W) = −(1/n) yᵀ f_W(X) (residual "y": r = y drops f, and −yᵀf is the
    function whose gradient is −(s/n)[σ' ⊙ y aᵀ]ᵀ X), at random entries, to 1e-6."""
    network, teacher, stream, x, y = setup(activation, preset)
    grad = gradient(network, teacher, stream, n_samples=ROWS, block_size=CHUNK_ROWS,
                    residual=residual)  # fmt: skip
    (a, s), w = parts(network), network.first_layer
    rng = np.random.default_rng(0)
    h = 1e-5
    for j, k in zip(rng.integers(0, WIDTH, 10), rng.integers(0, DIM, 10), strict=True):
        up, down = w.copy(), w.copy()
        up[j, k] += h
        down[j, k] -= h
        difference = loss(up, a, s, x, y, activation, residual) - loss(
            down, a, s, x, y, activation, residual
        )
        numeric = difference / (2 * h)
        assert grad[j, k] == pytest.approx(numeric, rel=1e-6, abs=1e-9 * np.abs(grad).max())


def test_the_reference_gradient_is_the_derivative_of_the_loss():
    """dense.gradient (used as the reference of the multi-step tests) is the derivative too."""
    network, _, _, x, y = setup("tanh", "moniri")
    a, s = parts(network)
    for residual in ("y-f", "y"):
        exact = complex_step_gradient(network.first_layer, a, s, x, y, "tanh", residual)
        reference = dense_gradient(network.first_layer, a, s, x, y, "tanh", residual)
        np.testing.assert_allclose(reference, exact, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("residual", ["y-f", "y"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_a_small_step_lowers_the_loss_of_its_own_batch(activation, residual):
    """W − εG lowers L on the batch G came from, by ε‖G‖² to first order: the step goes
    downhill (a sign error climbs) and G has the loss's scale (a factor 2 or 1/n is off)."""
    network, teacher, stream, x, y = setup(activation, "moniri")
    grad = gradient(network, teacher, stream, n_samples=ROWS, block_size=CHUNK_ROWS,
                    residual=residual)  # fmt: skip
    (a, s), w = parts(network), network.first_layer
    before = loss(w, a, s, x, y, activation, residual)
    epsilon = 1e-4 / np.linalg.norm(grad)
    after = loss(w - epsilon * grad, a, s, x, y, activation, residual)
    assert after < before
    assert (before - after) / (epsilon * np.sum(grad**2)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("reuse", [False, True])
def test_giant_steps_follow_the_recurrence_on_their_batches(reuse):
    """W_{t+1} = W_t − η ∇L(W_t; batch t), batch t the rows of stream (TRAIN, t) of the seed
    (batch 0 at every step when reused); the second layer never moves."""
    seed, eta, n = 5, 3.0, 600
    network, teacher, _, _, _ = setup("tanh", "moniri", seed=seed)
    plan = StepPlan(n, CHUNK_ROWS, residual="y-f", reuse_batch=reuse)
    a, s = parts(network)
    w = network.first_layer.copy()
    steps = list(giant_steps(network, teacher, plan, steps=3, step_size=eta, seed=seed))
    assert len(steps) == 3
    for t, stepped in enumerate(steps):
        x, noise = rows(SampleStream(seed, (TRAIN, 0 if reuse else t), DIM), n)
        y = labels(x, noise, teacher.directions, EXPRESSION, NOISE)
        w = w - eta * dense_gradient(w, a, s, x, y, "tanh", "y-f")
        np.testing.assert_allclose(stepped.first_layer, w, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(stepped.second_layer, a)
        assert stepped.output_scale == s


def test_giant_steps_draw_their_batches_in_the_runs_dtype_through_the_executor():
    """A float32 run's step t is the gradient on the float32 rows of batch t (float32 normals
    are other numbers than float64 ones, not a rounding of them), summed through the executor,
    with progress in blocks."""
    seed, eta, n = 5, 3.0, 600
    network, teacher, _, _, _ = setup("tanh", "moniri", seed=seed)
    plan = StepPlan(n, CHUNK_ROWS, residual="y-f")
    client, done = HereClient(), []
    stepped = list(giant_steps(network, teacher, plan, steps=2, step_size=eta, seed=seed,
                               dtype="float32", executor=client, progress=done.append))  # fmt: skip
    assert len(client.scattered) == 2 and sum(done) == 2 * -(-n // CHUNK_ROWS)
    w = network.first_layer
    for t, after in enumerate(stepped):
        batch = SampleStream(seed, (TRAIN, t), DIM, dtype="float32")
        current = network.with_first_layer(w)
        w = w - eta * gradient(current, teacher, batch, n_samples=n, block_size=CHUNK_ROWS)
        np.testing.assert_array_equal(after.first_layer, w)


def test_the_network_computes_its_formula():
    """f(x) = s Σ_j a_j σ(⟨w_j, x⟩), neuron by neuron, for both presets."""
    x = np.random.default_rng(1).standard_normal((5, DIM))
    for preset in ("moniri", "dandi"):
        network = initialize(2, WIDTH, DIM, activation=get_activation("tanh"), preset=preset)
        w, a, s = network.first_layer, network.second_layer, network.output_scale
        by_hand = [s * sum(a[j] * np.tanh(w[j] @ row) for j in range(WIDTH)) for row in x]
        np.testing.assert_allclose(network(x), by_hand, rtol=1e-12)
        np.testing.assert_allclose(network(x), output(w, a, s, x, "tanh"), rtol=1e-12)


def test_moniri_preset_distributions():
    """moniri: s = 1, w_j ~ Unif(S^{d−1}) (unit rows, E[w wᵀ] = I/d), a_j ~ N(0, 1/N)."""
    width, dim = 4000, 20
    network = initialize(0, width, dim, activation=get_activation("relu"), preset="moniri")
    w, a = network.first_layer, network.second_layer
    assert network.output_scale == 1.0
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-12)
    # Isotropy: ‖d WᵀW/N − I‖_op ≈ 2 sqrt(d/N) ≈ 0.14 for a uniform direction.
    assert np.linalg.norm(dim * w.T @ w / width - np.eye(dim), 2) < 0.25
    # N(0, 1/N): the standard error of the variance is sqrt(2/N) ≈ 2 %.
    assert abs(a.mean()) < 4 / width
    assert width * a.var() == pytest.approx(1.0, abs=0.08)
    assert abs(np.mean(a**4) / np.mean(a**2) ** 2 - 3) < 0.4  # Gaussian kurtosis, not ±c


@pytest.mark.parametrize("width", [24, 25])
def test_dandi_preset_distributions(width):
    """dandi: s = 1/N (mean field), unit rows, a_j = ±1, half each (the extra one +1)."""
    network = initialize(0, width, 30, activation=get_activation("relu"), preset="dandi")
    assert network.output_scale == pytest.approx(1 / width, rel=1e-15)
    np.testing.assert_allclose(np.linalg.norm(network.first_layer, axis=1), 1.0, rtol=1e-12)
    a = network.second_layer
    assert set(a) == {-1.0, 1.0}
    assert np.sum(a == 1.0) == (width + 1) // 2


def test_initialisation_overrides():
    """Gaussian rows have N(0, 1/d) entries (norms near 1, not equal to 1); "ones" is ones;
    an explicit output scale replaces the preset's."""
    width, dim = 3000, 50
    network = initialize(
        1,
        width,
        dim,
        activation=get_activation("relu"),
        preset="dandi",
        output_scale=0.25,
        first_layer="gaussian",
        second_layer="ones",
    )
    w = network.first_layer
    assert network.output_scale == 0.25
    np.testing.assert_array_equal(network.second_layer, np.ones(width))
    assert dim * w.var() == pytest.approx(1.0, abs=0.02)
    norms_sq = np.sum(w**2, axis=1)
    # ‖w‖² ~ χ²_d / d: mean 1, variance 2/d.
    assert norms_sq.mean() == pytest.approx(1.0, abs=0.01)
    assert norms_sq.var() * dim / 2 == pytest.approx(1.0, abs=0.1)


def test_initialisation_is_the_seed_s_and_only_the_seed_s():
    act = get_activation("tanh")
    a, b = (
        initialize(7, 10, 12, activation=act, preset="moniri"),
        initialize(7, 10, 12, activation=act, preset="moniri"),
    )
    np.testing.assert_array_equal(a.first_layer, b.first_layer)
    np.testing.assert_array_equal(a.second_layer, b.second_layer)
    c = initialize(8, 10, 12, activation=act, preset="moniri")
    assert not np.allclose(a.first_layer, c.first_layer)


def test_activations_used_as_references_are_the_named_ones():
    """dense.SIGMA is written out independently; it must be the same function as giantstep's
    (else the references above would test the wrong activation)."""
    z = np.linspace(-3, 3, 61)
    for name, (sigma, slope) in SIGMA.items():
        act = get_activation(name)
        np.testing.assert_allclose(act(z), sigma(z), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(act.derivative(z[z != 0]), slope(z[z != 0]), rtol=1e-10)


def test_a_diverging_step_is_named_without_floating_point_warnings():
    """Labels 1000·z1 give gradient entries above 1, so W − η∇L overflows for η = 1e308:
    DivergenceError at step 1 naming the weights; the overflow itself warns nothing (it is
    reported, with its step, by the error)."""
    network, _, *_ = setup("tanh", "moniri")
    teacher = Teacher.draw(3, "1000*z1", DIM)
    plan = StepPlan(512, CHUNK_ROWS)
    grad = gradient(network, teacher, plan.stream(0, 0, DIM), n_samples=512, block_size=256)
    assert np.abs(grad).max() > 1.8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DivergenceError) as err:
            list(giant_steps(network, teacher, plan, steps=3, step_size=1e308, seed=0))
    assert err.value.step == 1 and not isinstance(err.value, NonFiniteActivationError)
    assert str(err.value) == (
        "the run diverged at step 1: the first-layer weights are not finite "
        "(lower train.step_size.scale or its exponents)"
    )


def test_a_gradient_that_overflows_after_a_huge_step_is_a_divergence_at_that_step():
    """σ(z) = z + z³: a first step to |w| ~ 1e150 leaves finite weights, whose gradient at
    step 2 overflows (z³ ~ 1e450): DivergenceError at step 2 naming the gradient, since the
    weights are far above MODERATE_WEIGHT."""
    network = initialize(3, WIDTH, DIM, activation=get_activation("poly(0, 1, 0, 1)"))
    teacher = Teacher.draw(3, "z1", DIM)
    plan = StepPlan(512, CHUNK_ROWS)
    first = gradient(network, teacher, plan.stream(0, 0, DIM), n_samples=512, block_size=256)
    eta = 1e150 / np.abs(first).max()
    steps = giant_steps(network, teacher, plan, steps=2, step_size=eta, seed=0)
    assert np.abs(next(steps).first_layer).max() > 1e149
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DivergenceError) as err:
            next(steps)
    assert err.value.step == 2 and not isinstance(err.value, NonFiniteActivationError)
    assert str(err.value) == (
        "the run diverged at step 2: σ(XWᵀ) or σ'(XWᵀ) (in the gradient) are not finite "
        "(lower train.step_size.scale or its exponents)"
    )


@pytest.mark.parametrize("largest", [1e6, 1.0, 0.0])
def test_non_finite_values_from_moderate_weights_blame_the_activation(largest):
    """|w| ≤ MODERATE_WEIGHT = 1e6 (the bound included): the activation is the cause."""
    network = initialize(0, 3, 4, activation=get_activation("tanh"))
    w = np.zeros((3, 4))
    w[1, 2] = -largest
    with pytest.raises(NonFiniteActivationError) as err:
        check_finite(np.array([1.0, np.nan]), network.with_first_layer(w), 4, "the features")
    assert err.value.step == 4 and isinstance(err.value, DivergenceError)
    assert str(err.value) == (
        "activation tanh: the features are not finite for some inputs at step 4 although the "
        "weights are finite and moderate (|w| ≤ 1e+06): this is the activation, not a "
        "diverging step — change the activation"
    )


def test_non_finite_values_from_large_weights_are_a_divergence():
    network = initialize(0, 3, 4, activation=get_activation("tanh"))
    w = np.zeros((3, 4))
    w[0, 0] = 1e6 * (1 + 2**-52)
    with pytest.raises(DivergenceError) as err:
        check_finite(np.array([np.inf]), network.with_first_layer(w), 7, "the features")
    assert err.value.step == 7 and not isinstance(err.value, NonFiniteActivationError)
    assert str(err.value).startswith("the run diverged at step 7: the features are not finite")
    check_finite(np.array([1.0, -2.0]), network.with_first_layer(w), 7, "the features")


@pytest.mark.parametrize("reuse", [False, True])
def test_step_plans_draw_batch_t_or_batch_zero(reuse):
    """Step t draws gradient batch (TRAIN, t) of the seed, (TRAIN, 0) when reused; Gaussian
    float64 inputs unless told."""
    plan = StepPlan(512, 256, reuse_batch=reuse)
    stream = plan.stream(9, 5, DIM)
    assert (stream.seed, stream.key, stream.dim) == (9, (TRAIN, 0 if reuse else 5), DIM)
    assert stream.distribution == "gaussian" and stream.dtype == np.float64
    other = plan.stream(9, 5, DIM, distribution="sphere", dtype="float32")
    assert other.distribution == "sphere" and other.dtype == np.float32
    assert plan.residual == "y-f" and not StepPlan(512, 256).reuse_batch


def test_the_gradient_sum_holds_the_weights_in_the_blocks_dtype():
    """GradientSum.of(..., dtype): W and a in the blocks' dtype (two GEMMs per block in it),
    the sum (N, d) float64 and zero to start."""
    network, teacher, *_ = setup("tanh", "moniri")
    summand = GradientSum.of(network, teacher, "y", np.float32)
    assert summand.weights.dtype == np.float32 and summand.second_layer.dtype == np.float32
    np.testing.assert_array_equal(summand.weights, network.first_layer.astype(np.float32))
    assert summand.output_scale == network.output_scale and summand.residual == "y"
    zero = summand.zero()
    assert zero.shape == (WIDTH, DIM) and zero.dtype == np.float64 and not zero.any()


@pytest.mark.parametrize("residual", ["y-f", "y"])
def test_a_float32_gradient_is_the_formula_on_its_rows_to_single_precision(residual):
    """On a float32 stream (its own rows) the gradient, summed in float64, is the dense
    formula on those rows to single precision."""
    network, teacher, *_ = setup("tanh", "moniri")
    stream = SampleStream(3, (TRAIN, 0), DIM, dtype="float32")
    grad = gradient(network, teacher, stream, n_samples=ROWS, block_size=CHUNK_ROWS,
                    residual=residual)  # fmt: skip
    x, noise = (v.astype(np.float64) for v in rows(stream, ROWS))
    y = labels(x, noise, teacher.directions, EXPRESSION, NOISE)
    (a, s), w = parts(network), network.first_layer
    expected = dense_gradient(w, a, s, x, y, "tanh", residual)
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, expected, atol=1e-5 * np.abs(expected).max())
    # ... and computed in float32: not the float64 arithmetic on the same rows.
    assert np.abs(grad - expected).max() > 1e-10 * np.abs(expected).max()


def test_the_gradient_defaults_to_y_minus_f_and_goes_through_the_executor():
    """The default residual is y − f; with an executor every block is summed there (one
    piece of at most 8 blocks: the same additions, the same bits); progress counts blocks."""
    network, teacher, *_ = setup("tanh", "moniri")
    stream = SampleStream(3, (TRAIN, 0), DIM)
    keywords = dict(n_samples=ROWS, block_size=CHUNK_ROWS)
    explicit = gradient(network, teacher, stream, residual="y-f", **keywords)
    done = []
    default = gradient(network, teacher, stream, progress=done.append, **keywords)
    np.testing.assert_array_equal(default, explicit)
    assert sum(done) == -(-ROWS // CHUNK_ROWS)
    client = HereClient()
    spread = gradient(network, teacher, stream, residual="y-f", executor=client, **keywords)
    assert client.scattered  # the sum went through the executor
    np.testing.assert_array_equal(spread, explicit)
