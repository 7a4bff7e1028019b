"""Giant steps on the first layer (Algorithm 1 of Dandi et al.; Moniri et al. is ``T = 1``).

``W_{t+1} = W_t − η ∇_W L_t`` with ``L_t = (1/2n)‖y_t − f_{W_t}(X_t)‖²`` and
``∇_W L = −(s/n) [σ'(X Wᵀ) ⊙ (r aᵀ)]ᵀ X``, ``r = y − f(X)`` (or ``r = y``). The sum over samples
is accumulated block by block: the ``n × d`` matrix never exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from giantstep.data import TRAIN, SampleStream
from giantstep.distributed import active_spread
from giantstep.model import TwoLayerNetwork
from giantstep.targets import Teacher

Progress = Callable[[int], object] | None


class DivergenceError(RuntimeError):
    """The run produced non-finite weights or errors; ``step`` says where (1-based)."""

    def __init__(self, step: int, what: str):
        self.step = step
        super().__init__(
            f"the run diverged at step {step}: {what} are not finite "
            "(lower train.step_size.scale or its exponents)"
        )


@dataclass(frozen=True)
class StepPlan:
    """How the gradient batches are drawn: ``n`` samples, fresh per step unless reused."""

    batch_size: int
    block_size: int
    residual: Literal["y-f", "y"] = "y-f"
    reuse_batch: bool = False

    def stream(self, seed: int, step: int, dim: int, distribution: str, dtype) -> SampleStream:
        """The samples of gradient batch ``step`` (batch 0 for every step if reused)."""
        index = 0 if self.reuse_batch else step
        return SampleStream(seed, (TRAIN, index), dim, distribution, dtype)


def gradient(
    network: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream,
    n_samples: int,
    block_size: int,
    residual: Literal["y-f", "y"] = "y-f",
    progress: Progress = None,
) -> np.ndarray:
    """``∇_W L`` on rows ``0..n_samples`` of ``stream``: (N, d) float64.

    Each block costs two GEMMs in the stream's dtype (``X Wᵀ`` and ``Gᵀ X``); the block sums
    are added in float64. Inside ``distributed.spread_over`` the blocks go to a Dask cluster.
    """
    spread = active_spread()
    if spread is not None:
        return spread.gradient(network, teacher, stream, n_samples, block_size, residual, progress)
    dtype = stream.dtype
    weights = network.first_layer.astype(dtype)
    second = network.second_layer.astype(dtype)
    total = np.zeros_like(network.first_layer)
    product = np.empty(weights.shape, dtype=dtype)
    for block in stream.blocks(n_samples, block_size):
        _, y = teacher.labels(block)
        pre = block.x @ weights.T
        if residual == "y-f":
            value, slope = network.activation.value_and_derivative(pre)
            r = y - network.output_scale * (value @ second)
        else:
            slope, r = network.activation.derivative(pre), y
        # slope becomes G = σ'(X Wᵀ) ⊙ (r aᵀ), in place: no (rows × N) temporaries.
        slope *= r[:, None]
        slope *= second
        np.matmul(slope.T, block.x, out=product)
        total += product
        if progress:
            progress(1)
    total *= -network.output_scale / n_samples
    return total


def giant_steps(
    network: TwoLayerNetwork,
    teacher: Teacher,
    plan: StepPlan,
    steps: int,
    step_size: float,
    seed: int,
    distribution: str = "gaussian",
    dtype: str = "float64",
    progress: Progress = None,
) -> Iterator[TwoLayerNetwork]:
    """The network after each of ``steps`` steps (yielded in order; the second layer is fixed).

    Raises DivergenceError if the weights stop being finite.
    """
    for t in range(steps):
        stream = plan.stream(seed, t, network.dim, distribution, dtype)
        # Overflow is not an error here: non-finite weights are reported below, with the step.
        with np.errstate(over="ignore", invalid="ignore"):
            grad = gradient(
                network, teacher, stream, plan.batch_size, plan.block_size, plan.residual, progress
            )
            network = network.with_first_layer(network.first_layer - step_size * grad)
        if not np.isfinite(network.first_layer).all():
            raise DivergenceError(t + 1, "the first-layer weights")
        yield network
