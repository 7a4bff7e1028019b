"""Ridge regression of the second layer from streamed sufficient statistics.

``â(λ) = argmin (1/m)‖y − F a‖² + λ‖a‖²`` needs only ``FᵀF``, ``Fᵀy``, ``yᵀy`` and ``m``;
so does the error of any coefficients on any set of rows.
The whole ``λ`` path costs one eigendecomposition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from giantstep import kernels
from giantstep.activations import Activation
from giantstep.data import Block, SampleStream
from giantstep.linalg import small_network, symmetric_eigh
from giantstep.model import TwoLayerNetwork
from giantstep.reduction import reduce_blocks
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
        """The statistics of no rows, for ``width`` features."""
        return cls(np.zeros((width, width)), np.zeros(width))

    def add(self, features: np.ndarray, y: np.ndarray) -> None:
        """Add one block: features (rows, N), y (rows,)."""
        if np.ndim(y) != 1 or features.shape != (len(y), len(self.cross)):
            # Before any sum: a wrong y failed after FᵀF was added, leaving them inconsistent.
            raise ValueError(
                f"features (rows, {len(self.cross)}) and y (rows,), got {features.shape} "
                f"and {np.shape(y)}"
            )
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
        error = (self.sum_sq - 2 * (self.cross @ coefficients) + fitted_sq) / self.count
        # A squared error: where the fit interpolates, the expansion's rounding dips below 0.
        return np.maximum(error, 0.0)


@dataclass(frozen=True)
class GramSum:
    """``FᵀF``, ``Fᵀy``, ``yᵀy`` of ``F = σ(X Wᵀ)``, block by block (a :class:`StreamedSum`).

    weights: (d, N) ``Wᵀ`` in the blocks' dtype, or ``[W; W*]ᵀ`` (d, N + r) for a small
    network, whose labels' ``h = X W*ᵀ`` then come out of the same product (``width`` = N;
    ``linalg.small_network``) and whose blocks are summed in parts (``in_parts``,
    ``giantstep.reduction``).
    """

    name = "gram"
    weights: np.ndarray
    activation: Activation
    teacher: Teacher
    width: int
    in_parts: bool = False

    @classmethod
    def of(cls, network: TwoLayerNetwork, teacher: Teacher, dtype) -> GramSum:
        """The sum of ``network``'s features on blocks of ``dtype``."""
        weights = network.first_layer
        small = small_network(weights.size)
        forward = teacher.below(weights, dtype).T if small else weights.T.astype(dtype, copy=False)
        return cls(forward, network.activation, teacher, len(weights), in_parts=small)

    def zero(self) -> GramStatistics:
        """Statistics of no rows."""
        return GramStatistics.zeros(self.width)

    def add(self, total: GramStatistics, block: Block) -> GramStatistics:
        """Add the block's features and labels."""
        both = block.x @ self.weights
        fused = both.shape[1] > self.width
        _, y = self.teacher.labels(block, both[:, self.width :] if fused else None)
        total.add(kernels.values(self.activation, both[:, : self.width]), y)
        return total


def feature_statistics(
    network: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream,
    *,
    n_samples: int,
    block_size: int,
    executor: Any = None,
    progress: Callable[[int], object] | None = None,
) -> GramStatistics:
    """Gram statistics of the features ``F = σ(X Wᵀ)`` on rows ``0 .. n_samples`` of ``stream``.

    Parameters
    ----------
    network : TwoLayerNetwork
        Its first layer W (N, d) and activation σ define the features.
    teacher : Teacher
        Labels the rows.
    stream : SampleStream
        The ridge or test set.
    n_samples, block_size : int
        Rows summed and rows per block.
    executor : None or distributed.Client
        Where the blocks are summed (see :func:`giantstep.reduction.reduce_blocks`).
    progress : callable, optional
        Called with the number of blocks done.

    Returns
    -------
    GramStatistics
        ``FᵀF`` (N, N), ``Fᵀy`` (N,), ``yᵀy`` and the row count, in float64.

    Examples
    --------
    >>> from giantstep.activations import get_activation
    >>> from giantstep.data import RIDGE, SampleStream
    >>> from giantstep.model import initialize
    >>> from giantstep.targets import Teacher
    >>> network = initialize(0, 6, 4, activation=get_activation("relu"))
    >>> teacher, stream = Teacher.draw(0, "z1", 4), SampleStream(0, (RIDGE, 0), 4)
    >>> stats = feature_statistics(network, teacher, stream, n_samples=500, block_size=256)
    >>> stats.gram.shape, stats.count
    ((6, 6), 500)
    """
    summand = GramSum.of(network, teacher, stream.dtype)
    return reduce_blocks(
        summand, stream, n_samples, block_size, executor=executor, progress=progress
    )


def ridge_path(train: GramStatistics, ridges: Sequence[float]) -> np.ndarray:
    """Ridge coefficients for every ridge value, from one eigendecomposition of ``FᵀF/m``.

    ``â(λ) = argmin (1/m)‖y − F a‖² + λ‖a‖² = (FᵀF/m + λI)⁻¹ Fᵀy/m``.

    Parameters
    ----------
    train : GramStatistics
        Statistics of the ridge set (``FᵀF`` (N, N), ``Fᵀy`` (N,), m rows).
    ridges : sequence of float
        The ridge values λ > 0 (L of them).

    Returns
    -------
    numpy.ndarray
        (N, L): column ``l`` is ``â(ridges[l])``.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> stats = GramStatistics.zeros(2)
    >>> stats.add(f, np.array([1.0, 2.0, 3.0]))
    >>> coefficients = ridge_path(stats, [0.1])
    >>> np.allclose(coefficients[:, 0], np.linalg.solve(f.T @ f / 3 + 0.1 * np.eye(2),
    ...                                                  f.T @ [1.0, 2.0, 3.0] / 3))
    True
    """
    ridges = check_ridges(ridges)
    if train.count <= 0:
        raise ValueError("ridge_path: the statistics hold no rows")
    eigenvalues, eigenvectors = symmetric_eigh(train.gram / train.count)
    eigenvalues = np.clip(eigenvalues, 0.0, None)  # FᵀF is PSD; rounding can dip below 0
    projected = eigenvectors.T @ (train.cross / train.count)
    # Fᵀy has no part along FᵀF's null space; what rounding puts there, divided by a tiny λ,
    # swamped the coefficients (m < N, λ = 1e-60: ‖â‖ = 3e44, a negative training error).
    null = eigenvalues <= len(eigenvalues) * np.finfo(float).eps * eigenvalues.max(initial=0.0)
    projected[null] = 0.0
    shrink = 1.0 / (eigenvalues[:, None] + ridges[None, :])
    return eigenvectors @ (projected[:, None] * shrink)


def check_ridges(ridges: Sequence[float]) -> np.ndarray:
    """(L,) float64: ``ridges``, ValueError unless a non-empty sequence of finite values > 0."""
    values = np.asarray(ridges, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"ridges: a non-empty sequence of ridge values λ > 0, got {ridges!r}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"ridges: every λ must be finite and > 0, got {values.tolist()}")
    return values
