"""Giant steps on the first layer (Algorithm 1 of Dandi et al.; Moniri et al. is ``T = 1``).

``W_{t+1} = W_t − η ∇_W L_t`` with ``L_t = (1/2n)‖y_t − f_{W_t}(X_t)‖²`` and
``∇_W L = −(s/n) [σ'(X Wᵀ) ⊙ (r aᵀ)]ᵀ X``, ``r = y − f(X)`` (or ``r = y``). The sum over samples
is accumulated block by block: the ``n × d`` matrix never exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

import numpy as np

from giantstep import kernels
from giantstep.activations import Activation
from giantstep.data import TRAIN, Block, SampleStream, draw_ahead
from giantstep.linalg import small_network
from giantstep.model import TwoLayerNetwork
from giantstep.reduction import reduce_blocks
from giantstep.scratch import scratch
from giantstep.targets import Teacher

#: The residual ``r`` of the update (the config's ``train.residual``): ``y − f(X)`` (the true
#: gradient) or ``y`` (the correlation loss several analyses assume).
Residual = Literal["y-f", "y"]

Progress = Callable[[int], object] | None


class DivergenceError(RuntimeError):
    """The run produced non-finite weights or errors; ``step`` says where (1-based)."""

    def __init__(self, step: int, what: str, message: str | None = None):
        """``message`` replaces the default one: a subclass that names another cause."""
        self.step = step
        if message is None and step == 0:  # no step was taken: the step size is not the cause
            message = (
                f"{what} are not finite at initialisation, before any step: the labels or the "
                "network's output overflow (check target.expression, model.output_scale)"
            )
        super().__init__(
            message
            or f"the run diverged at step {step}: {what} are not finite "
            "(lower train.step_size.scale or its exponents)"
        )


class NonFiniteActivationError(DivergenceError):
    """The activation gave non-finite values on finite, moderate pre-activations: the
    activation is the cause (e.g. ``poly`` with huge coefficients), not a diverging step.
    Deterministic like a divergence (a sweep's rerun skips it)."""

    def __init__(self, step: int, activation: str, what: str):
        super().__init__(
            step,
            what,
            f"activation {activation}: {what} are not finite for some inputs at step {step} "
            f"although the weights are finite and moderate (|w| ≤ {MODERATE_WEIGHT:g}): this is "
            "the activation, not a diverging step — change the activation",
        )


class OutputScaleError(DivergenceError):
    """The network's output overflowed because the config scaled it so (``model.output_scale``
    times the second layer), not because a step diverged. Deterministic like a divergence."""

    def __init__(self, step: int, scale: float, what: str, weights: float | None = None):
        """``weights``: the first layer's largest entry if the scaled gradient drove it huge
        (None: the first layer is moderate, the output itself overflowed)."""
        effect = (
            "and overflows it, although the first layer is moderate"
            if weights is None
            else f"and scales the gradient, which drove the weights to {weights:.3g}"
        )
        super().__init__(
            step,
            what,
            f"model.output_scale: {what} are not finite at step {step}: the output's scale "
            f"|s|·max|a_j| = {scale:.3g} exceeds {HUGE_OUTPUT_SCALE:g} {effect} — lower "
            "model.output_scale",
        )


#: Weights below this size are not the product of a diverging step: non-finite values computed
#: from them come from the activation (or from an output scaled beyond it: OutputScaleError).
MODERATE_WEIGHT = 1e6
#: An output scale beyond this makes the residual and its products with ``a`` overflow
#: (they grow like its square); below it, non-finite values in the gradient are the
#: activation's (a user's ``model.output_scale = 1e7`` runs).
HUGE_OUTPUT_SCALE = 1e100


def check_finite(
    values: np.ndarray, network: TwoLayerNetwork, step: int, what: str, *, output: bool = False
) -> None:
    """Raise if ``values`` are not all finite: DivergenceError when the first layer is not
    moderate (OutputScaleError if a huge output scale scaled the steps that made it so), else —
    for values the output enters (``output``, the gradient) —
    OutputScaleError when the output's scale is huge (the config did it), else
    NonFiniteActivationError (the activation did it)."""
    if np.isfinite(values).all():
        return
    output_scale = abs(network.output_scale) * float(np.abs(network.second_layer).max())
    largest = float(np.abs(network.first_layer).max())
    if largest > MODERATE_WEIGHT:
        if step and output_scale > HUGE_OUTPUT_SCALE:  # the steps were scaled by it
            raise OutputScaleError(step, output_scale, what, weights=largest)
        raise DivergenceError(step, what)
    if output and output_scale > HUGE_OUTPUT_SCALE:
        raise OutputScaleError(step, output_scale, what)
    raise NonFiniteActivationError(step, network.activation.name, what)


@dataclass(frozen=True)
class StepPlan:
    """How the gradient batches are drawn: ``n`` samples, fresh per step unless reused."""

    batch_size: int
    block_size: int
    _: KW_ONLY
    residual: Residual = "y-f"
    reuse_batch: bool = False

    def stream(
        self, seed: int, step: int, dim: int, *, distribution: str = "gaussian", dtype="float64"
    ) -> SampleStream:
        """The samples of gradient batch ``step`` (batch 0 for every step if reused)."""
        index = 0 if self.reuse_batch else step
        return SampleStream(seed, (TRAIN, index), dim, distribution=distribution, dtype=dtype)


@dataclass(frozen=True)
class GradientSum:
    """``Σ_blocks Gᵀ X`` with ``G = σ'(X Wᵀ) ⊙ (r aᵀ)``: the streamed part of ``∇_W L``.

    weights: (N, d) and second_layer: (N,), already in the blocks' dtype; the sum is (N, d)
    float64. Each block costs two GEMMs in the blocks' dtype (``X Wᵀ`` and ``Gᵀ X``).
    forward: ``[W; W*]`` (N + r, d) for a small network, whose labels' ``h = X W*ᵀ`` then
    come out of the forward product (``linalg.small_network``); else None.
    in_parts: True for a small network, whose blocks are summed in parts
    (``giantstep.reduction``).
    """

    name = "gradient"
    weights: np.ndarray
    second_layer: np.ndarray
    output_scale: float
    activation: Activation
    teacher: Teacher
    residual: Residual = "y-f"
    forward: np.ndarray | None = None
    in_parts: bool = False

    @classmethod
    def of(cls, network: TwoLayerNetwork, teacher: Teacher, residual: Residual, dtype):
        """The sum for ``network`` on blocks of ``dtype``."""
        weights = network.first_layer
        small = small_network(weights.size)
        return cls(
            weights.astype(dtype, copy=False),
            network.second_layer.astype(dtype, copy=False),
            network.output_scale,
            network.activation,
            teacher,
            residual,
            teacher.below(weights, dtype) if small else None,
            in_parts=small,
        )

    def zero(self) -> np.ndarray:
        """(N, d) zeros, float64."""
        return np.zeros(self.weights.shape)

    def add(self, total: np.ndarray, block: Block) -> np.ndarray:
        """Add the block's ``Gᵀ X`` (N, d) into total."""
        rows, width = len(block.x), self.weights.shape[0]
        forward = self.weights if self.forward is None else self.forward
        both = scratch("pre", (rows, len(forward)), block.x.dtype)
        both = np.matmul(block.x, forward.T, out=both)
        pre = both[:, :width]  # the whole of it, unless h is in the last r columns
        _, y = self.teacher.labels(block, None if self.forward is None else both[:, width:])
        shape = pre.shape
        # G = σ'(X Wᵀ) ⊙ (r aᵀ) overwrites the pre-activations: no (rows × N) temporaries.
        if self.residual == "y-f":
            value = scratch("value", shape, y.dtype)
            value, slope = kernels.values_and_slopes(self.activation, pre, value)
            r = y - self.output_scale * (value @ self.second_layer)
            slope = kernels.scale(slope, r, self.second_layer)
        else:
            slope = kernels.scaled_slopes(self.activation, pre, y, self.second_layer)
        product = scratch("gradient", self.weights.shape, y.dtype)
        total += np.matmul(slope.T, block.x, out=product)
        return total


def gradient(
    network: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream,
    *,
    n_samples: int,
    block_size: int,
    residual: Residual = "y-f",
    executor: Any = None,
    progress: Progress = None,
) -> np.ndarray:
    """``∇_W L`` on rows ``0 .. n_samples`` of ``stream``, summed block by block.

    ``∇_W L = −(s/n) [σ'(X Wᵀ) ⊙ (r aᵀ)]ᵀ X`` with ``r = y − f(X)`` (``residual="y-f"``) or
    ``r = y``; the ``n × d`` matrix ``X`` never exists.

    Parameters
    ----------
    network : TwoLayerNetwork
        The network ``f`` (first layer W (N, d), second layer a (N,), scale s).
    teacher : Teacher
        Labels each block.
    stream : SampleStream
        The gradient batch.
    n_samples : int
        Its number of samples ``n``.
    block_size : int
        Rows per block (a multiple of ``data.CHUNK_ROWS``).
    residual : {"y-f", "y"}
        The residual of the update.
    executor : None or distributed.Client
        Where the blocks are summed (see :func:`giantstep.reduction.reduce_blocks`).
    progress : callable, optional
        Called with the number of blocks done.

    Returns
    -------
    numpy.ndarray
        (N, d) float64.

    Examples
    --------
    >>> from giantstep.activations import get_activation
    >>> from giantstep.data import TRAIN, SampleStream
    >>> from giantstep.model import initialize
    >>> from giantstep.targets import Teacher
    >>> network = initialize(0, 8, 5, activation=get_activation("tanh"))
    >>> teacher = Teacher.draw(0, "z1", 5)
    >>> stream = SampleStream(0, (TRAIN, 0), 5)
    >>> gradient(network, teacher, stream, n_samples=1000, block_size=256).shape
    (8, 5)
    """
    summand = GradientSum.of(network, teacher, residual, stream.dtype)
    total = reduce_blocks(
        summand, stream, n_samples, block_size, executor=executor, progress=progress
    )
    total *= -network.output_scale / n_samples
    return total


def giant_steps(
    network: TwoLayerNetwork,
    teacher: Teacher,
    plan: StepPlan,
    *,
    steps: int,
    step_size: float,
    seed: int,
    distribution: str = "gaussian",
    dtype: str = "float64",
    executor: Any = None,
    progress: Progress = None,
) -> Iterator[TwoLayerNetwork]:
    """The network after each of ``steps`` giant steps ``W ← W − η ∇_W L``, in order.

    The second layer is fixed. Step ``t`` uses gradient batch ``t`` of ``seed`` (batch 0 for
    every step if ``plan.reuse_batch``).

    Parameters
    ----------
    network : TwoLayerNetwork
        The network at initialisation.
    teacher : Teacher
        Labels the batches.
    plan : StepPlan
        Batch size, block size, residual and batch reuse.
    steps : int
        Number of steps ``T``.
    step_size : float
        ``η``.
    seed : int
        The experiment's seed (selects the batches).
    distribution, dtype : str
        Of the inputs (``data.distribution``, ``compute.dtype``).
    executor : None or distributed.Client
        Where the gradient's blocks are summed.
    progress : callable, optional
        Called with the number of blocks done.

    Yields
    ------
    TwoLayerNetwork
        After step 1, 2, ..., T.

    Raises
    ------
    DivergenceError
        If the weights stop being finite (with the step where it happened).

    Examples
    --------
    >>> from giantstep.activations import get_activation
    >>> from giantstep.model import initialize
    >>> from giantstep.targets import Teacher
    >>> network = initialize(0, 8, 5, activation=get_activation("tanh"))
    >>> teacher = Teacher.draw(0, "z1", 5)
    >>> plan = StepPlan(batch_size=512, block_size=256)
    >>> [n.first_layer.shape for n in giant_steps(network, teacher, plan, steps=2,
    ...                                           step_size=1.0, seed=0)]
    [(8, 5), (8, 5)]
    """
    for t in range(steps):
        stream = plan.stream(seed, t, network.dim, distribution=distribution, dtype=dtype)
        # Overflow is not an error here: non-finite weights are reported below, with the step.
        with np.errstate(over="ignore", invalid="ignore"):
            grad = gradient(
                network,
                teacher,
                stream,
                n_samples=plan.batch_size,
                block_size=plan.block_size,
                residual=plan.residual,
                executor=executor,
                progress=progress,
            )
            check_finite(grad, network, t + 1, "σ(XWᵀ) or σ'(XWᵀ) (in the gradient)", output=True)
            network = network.with_first_layer(network.first_layer - step_size * grad)
        if not np.isfinite(network.first_layer).all():
            raise DivergenceError(t + 1, "the first-layer weights")
        if t + 1 < steps:  # while the caller measures this step (data.draw_ahead)
            batch = plan.stream(seed, t + 1, network.dim, distribution=distribution, dtype=dtype)
            draw_ahead(batch, plan.batch_size, plan.block_size)
        yield network
