"""How the first layer lines up with the target directions."""

from __future__ import annotations

import numpy as np

from giantstep.linalg import top_singular_triplet


def direction_alignment(first_layer: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``sqrt(mean_j cos²(w_j, W*_k))`` for each target direction k: (r,).

    first_layer: (N, d) rows ``w_j``; directions: (r, d) orthonormal rows ``W*_k``.
    Random rows give about ``1/sqrt(d)``; a population along ``W*_k`` gives 1.
    """
    cosines = (first_layer @ directions.T) / np.linalg.norm(first_layer, axis=1, keepdims=True)
    return np.sqrt(np.mean(cosines**2, axis=0))


def update_cosine(update: np.ndarray, direction: np.ndarray) -> float:
    """``|cos|`` between the top right singular vector of update (N, d) and direction (d,).

    The sign of a singular vector is arbitrary, hence the absolute value.
    """
    if not np.any(update):
        return 0.0
    _, _, v = top_singular_triplet(update)
    return float(abs(v @ direction) / np.linalg.norm(direction))
