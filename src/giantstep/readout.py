"""Ridge regression of the second layer from streamed sufficient statistics.

``â(λ) = argmin (1/m)‖y − F a‖² + λ‖a‖²`` needs only ``FᵀF``, ``Fᵀy``, ``yᵀy`` and ``m``;
so does the error of any coefficients on any set of rows.
The whole ``λ`` path costs one eigendecomposition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from giantstep.data import SampleStream
from giantstep.distributed import active_spread
from giantstep.model import TwoLayerNetwork
from giantstep.targets import Teacher


@dataclass
class GramStatistics:
    """Sums over ``count`` rows of features F (rows, N) and labels y (rows,).

    gram: (N, N) ``FᵀF``; cross: (N,) ``Fᵀy``; sum_sq: ``yᵀy``. All float64, whatever the
    dtype of the blocks, so that sums over many blocks keep their precision.
    """

    gram: np.ndarray
    cross: np.ndarray
    sum_sq: float = 0.0
    count: int = 0

    @classmethod
    def zeros(cls, width: int) -> GramStatistics:
        return cls(np.zeros((width, width)), np.zeros(width))

    def add(self, features: np.ndarray, y: np.ndarray) -> None:
        """Add one block: features (rows, N), y (rows,)."""
        self.gram += features.T @ features
        self.cross += features.T @ y
        self.sum_sq += float(y @ y)
        self.count += len(y)

    def __add__(self, other: GramStatistics) -> GramStatistics:
        return GramStatistics(
            self.gram + other.gram,
            self.cross + other.cross,
            self.sum_sq + other.sum_sq,
            self.count + other.count,
        )

    def mean_squared_error(self, coefficients: np.ndarray) -> np.ndarray:
        """``(1/m)‖y − F a‖²`` for each column a of coefficients (N, L): (L,)."""
        fitted_sq = np.einsum("nl,nl->l", coefficients, self.gram @ coefficients)
        return (self.sum_sq - 2 * (self.cross @ coefficients) + fitted_sq) / self.count


def feature_statistics(
    network: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream,
    n_samples: int,
    block_size: int,
    progress: Callable[[int], object] | None = None,
) -> GramStatistics:
    """Gram statistics of ``F = σ(X Wᵀ)`` on rows ``0..n_samples`` of ``stream``.

    Inside ``distributed.spread_over`` the blocks go to a Dask cluster.
    """
    spread = active_spread()
    if spread is not None:
        return spread.feature_statistics(network, teacher, stream, n_samples, block_size, progress)
    weights = network.first_layer.T.astype(stream.dtype)
    total = GramStatistics.zeros(network.width)
    for block in stream.blocks(n_samples, block_size):
        _, y = teacher.labels(block)
        total.add(network.activation(block.x @ weights), y)
        if progress:
            progress(1)
    return total


def ridge_path(train: GramStatistics, ridges: Sequence[float]) -> np.ndarray:
    """Ridge coefficients (N, L), one column per λ, from one eigendecomposition of ``FᵀF/m``."""
    eigenvalues, eigenvectors = np.linalg.eigh(train.gram / train.count)
    eigenvalues = np.clip(eigenvalues, 0.0, None)  # FᵀF is PSD; rounding can dip below 0
    projected = eigenvectors.T @ (train.cross / train.count)
    shrink = 1.0 / (eigenvalues[:, None] + np.asarray(ridges)[None, :])
    return eigenvectors @ (projected[:, None] * shrink)
