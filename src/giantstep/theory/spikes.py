"""Moniri et al.: the spikes a giant step adds to the features, and where they point."""

from __future__ import annotations

import math


def direction_cosine(linear_coefficient: float, second_moment: float, dim: int, n: int) -> float:
    """``γ = μ_1(σ*) / sqrt(μ_1(σ*)² + E[y²]·d/n)``: the limit of ``cos(ζ, β)``, ``ζ = Xᵀy/n``.

    This is the direction of the one-step update with residual ``y`` (the setting of the
    theory). With residual ``y − f`` at ``moniri`` initialisation the update also carries the
    network's own direction ``W_0ᵀa`` and its cosine with ``β`` is lower.

    Parameters
    ----------
    linear_coefficient : float
        ``μ_1(σ*) = E[σ*(z) z]``.
    second_moment : float
        ``E[y²] = E[σ*(z)²] + σ_ε²``.
    dim, n : int
        ``d`` and the batch size ``n``.

    Returns
    -------
    float
        ``γ ∈ [0, 1]``.

    Examples
    --------
    >>> round(direction_cosine(1.0, 1.5, 1000, 4000), 4)  # σ* = z + He2(z)/2, default run
    0.8528
    """
    if not (dim > 0 and n > 0):
        raise ValueError(f"dim and n must be > 0, got dim = {dim}, n = {n}")
    if not (math.isfinite(second_moment) and second_moment >= 0):
        raise ValueError(f"second_moment: E[y²] must be finite and >= 0, got {second_moment}")
    mu1 = linear_coefficient
    denominator = math.sqrt(mu1**2 + second_moment * dim / n)
    return abs(mu1) / denominator if denominator else 0.0  # y ≡ 0: no update, no direction
