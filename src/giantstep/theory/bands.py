"""Moniri et al.: the band rule ``ℓ(α)`` and the spiked approximation ``F_ℓ`` (SCIENCE.md §3 [M]).

With ``η = c·n^α``, term ``k`` of ``F ≈ F_0 + Σ_k (μ_k/k!) (η μ_1)^k (X̃ζ)^{∘k} (a^{∘k})ᵀ``
separates from the bulk iff ``α > (k−1)/(2k)``, and term ``ℓ+1`` is negligible iff
``α < ℓ/(2ℓ+2)``. Inside ``((ℓ−1)/(2ℓ), ℓ/(2ℓ+2))`` there are ``ℓ`` terms; the degrees whose
``μ_k(σ)`` vanishes add no spike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from giantstep.linalg import top_singular_triplet

#: Below this a Hermite coefficient is zero (the quadrature is accurate to ~1e-12) — or below
#: ``ROUNDING_FACTOR`` times its rounding bound, when one is given: from ``k ≈ 20`` the
#: rounding of a zero ``μ_k`` (tanh's even ones, relu's odd ones) exceeds 1e-9, and they
#: counted as spiking degrees (39 spikes for 25 at α = 0.49).
ZERO_COEFFICIENT = 1e-9
ROUNDING_FACTOR = 100.0


def separation_threshold(k: int) -> Fraction:
    """Term ``k`` separates from the bulk iff ``α > (k−1)/(2k)``."""
    return Fraction(k - 1, 2 * k)


@dataclass(frozen=True)
class Band:
    """``α ∈ (lower, upper)``: terms ``1..ell`` present; ``degrees`` those with ``μ_k(σ) ≠ 0``."""

    ell: int
    lower: Fraction
    upper: Fraction
    degrees: tuple[int, ...]

    @property
    def spikes(self) -> int:
        """The number of spikes in this band."""
        return len(self.degrees)


def spiking_degrees(
    ell: int, mu: np.ndarray, rounding: np.ndarray | None = None
) -> tuple[int, ...]:
    """Degrees ``k ≤ ℓ`` with ``μ_k(σ) ≠ 0``; none at all if ``μ_1(σ) = 0`` (no update).
    ``rounding``: (K + 1,) bounds on the rounding of ``mu`` (``Activation.hermite_rounding``)."""
    if len(mu) <= ell:
        raise ValueError(f"need μ_0..μ_{ell}, got {len(mu)} coefficients")
    zero = np.full(len(mu), ZERO_COEFFICIENT)
    if rounding is not None:
        zero = np.maximum(zero, ROUNDING_FACTOR * np.asarray(rounding))
    if abs(mu[1]) < zero[1]:
        return ()
    return tuple(k for k in range(1, ell + 1) if abs(mu[k]) >= zero[k])


def bands(mu: np.ndarray) -> list[Band]:
    """The bands ``ℓ = 1 .. len(mu) − 1`` for an activation with coefficients ``μ_0..μ_K``.

    Parameters
    ----------
    mu : numpy.ndarray
        (K + 1,) ``μ_0(σ) .. μ_K(σ)`` (``Activation.hermite_coefficients(K)``).

    Returns
    -------
    list of Band
        Band ``ℓ`` covers ``α ∈ ((ℓ−1)/(2ℓ), ℓ/(2ℓ+2))`` and has the spiking degrees ``k ≤ ℓ``
        with ``μ_k ≠ 0`` (none when ``μ_1 = 0``).

    Examples
    --------
    >>> from giantstep.activations import get_activation
    >>> [(str(b.lower), str(b.upper), b.degrees) for b in bands(
    ...     get_activation("tanh").hermite_coefficients(3))]
    [('0', '1/4', (1,)), ('1/4', '1/3', (1,)), ('1/3', '3/8', (1, 3))]
    """
    return [
        Band(
            ell, separation_threshold(ell), separation_threshold(ell + 1), spiking_degrees(ell, mu)
        )
        for ell in range(1, len(mu))
    ]


def band_index(alpha: float) -> tuple[int, bool]:
    """``(ℓ, on_boundary)`` for step-size exponent ``α ∈ [0, 1/2)``.

    Parameters
    ----------
    alpha : float
        ``α`` of ``η = c·n^α``.

    Returns
    -------
    (int, bool)
        ``ℓ``, the number of terms ``k`` with ``(k−1)/(2k) < α``, and whether ``α`` equals a
        threshold (e.g. ``α = 0``, ``1/4``), where the limit depends on the constants.

    Raises
    ------
    ValueError
        Outside ``[0, 1/2)``: the theory's perturbation breaks down at ``1/2``.

    Examples
    --------
    >>> band_index(0.3), band_index(0.25), band_index(0.1)
    ((2, False), (1, True), (1, False))
    """
    if not 0 <= alpha < 0.5:
        raise ValueError(f"the band rule needs 0 ≤ α < 1/2 (got α = {alpha})")
    # (k−1)/(2k) < α iff k < 1/(1 − 2α): start a few terms below, not at 0 — near 1/2, ℓ is in
    # the millions (α = 1/2 − 1e-9 looped for minutes). The loop settles a boundary.
    ell = max(0, math.floor(1 / (1 - 2 * alpha)) - 2)
    on_boundary = False
    while True:
        threshold = float(separation_threshold(ell + 1))
        if math.isclose(alpha, threshold, abs_tol=1e-12):
            on_boundary = True
            break
        if alpha < threshold:
            break
        ell += 1
    return ell, on_boundary


def predicted_spikes(alpha: float, mu: np.ndarray, rounding: np.ndarray | None = None) -> int:
    """Spikes the band rule predicts at ``α`` (degrees with ``μ_k(σ) = 0`` removed).

    Parameters
    ----------
    alpha : float
        ``α ∈ [0, 1/2)`` of ``η = c·n^α``.
    mu : numpy.ndarray
        (K + 1,) ``μ_0(σ) .. μ_K(σ)``, K at least the band's ``ℓ``.
    rounding : numpy.ndarray, optional
        (K + 1,) bounds on their rounding (:func:`spiking_degrees`).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For ``α`` outside ``[0, 1/2)`` or too few coefficients.

    Examples
    --------
    >>> from giantstep.activations import get_activation
    >>> mu = get_activation("relu").hermite_coefficients(4)
    >>> [predicted_spikes(a, mu) for a in (0.1, 0.3, 0.35, 0.39)]
    [1, 2, 2, 3]
    """
    ell, _ = band_index(alpha)
    return len(spiking_degrees(ell, mu, rounding)) if ell else 0


@dataclass(frozen=True)
class UpdateTriplet:
    """Top singular triplet of the update ``W_1 − W_0 ≈ s · u vᵀ``: u (N,), v (d,), unit."""

    value: float
    left: np.ndarray
    right: np.ndarray


def update_triplet(update: np.ndarray) -> UpdateTriplet:
    """Top singular triplet of update (N, d).

    Examples
    --------
    >>> import numpy as np
    >>> t = update_triplet(3.0 * np.outer([0.6, 0.8], [1.0, 0.0, 0.0]))
    >>> round(t.value, 12), np.round(np.abs(t.right), 12).tolist()
    (3.0, [1.0, 0.0, 0.0])
    """
    return UpdateTriplet(*top_singular_triplet(update))


def spike_terms(
    x: np.ndarray, triplet: UpdateTriplet, mu: np.ndarray, max_degree: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rank-one terms of ``F_ℓ`` on rows x (rows, d): ``F_ℓ = F_0 + T[:, :ℓ] U[:, :ℓ]ᵀ``.

    ``⟨w_j + s u_j v, x⟩ = ⟨w_j, x⟩ + u_j t`` with ``t = s⟨v, x⟩``; a Taylor expansion with
    ``σ^{(k)}`` replaced by its Gaussian mean ``μ_k`` gives ``T[:, k−1] = (μ_k/k!) t^k`` (rows, K)
    and ``U[:, k−1] = u^{∘k}`` (N, K). The sign of (u, v) cancels in every term.
    """
    t = triplet.value * (x @ triplet.right.astype(x.dtype, copy=False)).astype(np.float64)
    degrees = np.arange(1, max_degree + 1)
    scale = np.array([mu[k] / math.factorial(k) for k in degrees])
    terms = t[:, None] ** degrees[None, :] * scale[None, :]
    powers = triplet.left[:, None] ** degrees[None, :]
    return terms, powers
