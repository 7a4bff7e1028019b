"""One-dimensional Gaussian integrals for the error theory (``giantstep.theory.errors``).

Every expectation the deterministic equivalents need is ``E_g f(m + c g)``, ``g ~ N(0, 1)``, for
many shifts ``m`` and scales ``c`` at once (one pair per neuron and spike node): the mean, the
cross moment ``E[f(m + c g) g]`` and the second moment. They are computed by composite
Gauss–Legendre quadrature on ``[−SPAN, SPAN]`` (``PANELS`` panels × ``NODES`` nodes) times the
Gaussian density, with the interval **split at each kink** ``g* = (kink − m)/c`` of f: the kink
moves with ``(m, c)``, so the fixed kinks of ``giantstep.hermite.gaussian_rule`` do not apply.
On each smooth piece the rule converges geometrically (12 nodes on a panel of width ≤ 1 resolve
the Gaussian to ~1e-16); the mass outside ±11 is ~4e-28. A wide scale ``c`` gets more panels
(:func:`panel_factors`), so that they resolve f's own variation too. relu, the default
activation, has closed forms and skips the quadrature.

The integrals over the spike coordinate ``s`` are over smooth functions (Gaussian convolutions),
for which probabilists' Gauss–Hermite is the efficient rule (:func:`spike_rule`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from giantstep.activations import Activation
from giantstep.hermite import gaussian_expectation, gaussian_rule

SPAN = 11.0
PANELS = 22
NODES = 12
#: Above this scale c, f(m + c g) varies on a g-scale of ~1/c, finer than a panel: the panels
#: are multiplied by the power of two of ``c / WIDE_SCALE`` rounded up (tanh's mean at c = 10 was
#: off by 3.5e-5 relative with 22 panels, 1e-10 at c = 3), up to ``MAX_PANEL_FACTOR``.
WIDE_SCALE = 2.0
MAX_PANEL_FACTOR = 64
#: Pairs (m, c) integrated at once: bounds the (pairs × nodes) work arrays to ~16 MB.
CHUNK_NODES = 2_000_000

Function = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GaussianMoments:
    """``E f(m + c g)``, ``E[f(m + c g) g]``, ``E f(m + c g)²`` and ``E[f(m + c g) He₂(g)]``
    (``He₂(g) = g² − 1``; ``= c² E f″(m + c g)`` for smooth f), each of the shape of m and c."""

    mean: np.ndarray
    cross: np.ndarray
    second: np.ndarray
    quadratic: np.ndarray


def _legendre_reference() -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(NODES)
    return nodes, weights


def _segment_rule(
    left: np.ndarray, right: np.ndarray, panels: int = PANELS
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (P, panels·NODES) of the composite rule on [left_p, right_p] × density."""
    reference_nodes, reference_weights = _legendre_reference()
    fractions = np.arange(panels + 1) / panels
    edges = left[:, None] + (right - left)[:, None] * fractions[None, :]  # (P, PANELS + 1)
    half = (edges[:, 1:] - edges[:, :-1]) / 2
    middle = (edges[:, 1:] + edges[:, :-1]) / 2
    nodes = middle[:, :, None] + half[:, :, None] * reference_nodes[None, None, :]
    weights = half[:, :, None] * reference_weights[None, None, :] * np.ones_like(nodes)
    nodes = nodes.reshape(len(left), -1)
    weights = weights.reshape(len(left), -1) * np.exp(-nodes * nodes / 2) / np.sqrt(2 * np.pi)
    return nodes, weights


def panel_factors(scale: np.ndarray) -> np.ndarray:
    """(P,) the factor of ``PANELS`` each scale c gets: 1 up to ``WIDE_SCALE``, then the power
    of two of ``c / WIDE_SCALE`` rounded up, at most ``MAX_PANEL_FACTOR``."""
    ratio = np.maximum(np.asarray(scale, dtype=float) / WIDE_SCALE, 1.0)
    return np.minimum(2.0 ** np.ceil(np.log2(ratio)), MAX_PANEL_FACTOR).astype(int)


def _quadrature_moments(
    function: Function, kinks: tuple[float, ...], shift: np.ndarray, scale: np.ndarray
) -> GaussianMoments:
    """The four moments for flat arrays shift, scale (P,) with scale > 0, by split quadrature:
    ``PANELS`` panels per piece, more for wide scales (:func:`panel_factors`)."""
    moments = [np.empty(len(shift)) for _ in range(4)]
    factors = panel_factors(scale)
    for factor in np.unique(factors):
        group = np.flatnonzero(factors == factor)
        found = _moments_on_panels(function, kinks, shift[group], scale[group], PANELS * factor)
        for whole, part in zip(moments, dataclasses.astuple(found), strict=True):
            whole[group] = part
    return GaussianMoments(*moments)


def _moments_on_panels(
    function: Function, kinks: tuple[float, ...], shift: np.ndarray, scale: np.ndarray, panels
) -> GaussianMoments:
    """:func:`_quadrature_moments` with ``panels`` panels on each piece."""
    count = len(shift)
    moments = [np.empty(count) for _ in range(4)]
    pieces = len(kinks) + 1
    chunk = max(1, CHUNK_NODES // (pieces * panels * NODES))
    for start in range(0, count, chunk):
        m, c = shift[start : start + chunk], scale[start : start + chunk]
        # The breakpoints of each pair: ±SPAN and the kinks mapped to g, clipped and sorted.
        inner = np.array([(k - m) / c for k in kinks]).reshape(len(kinks), len(m)).T
        breaks = np.sort(np.clip(inner, -SPAN, SPAN), axis=1)
        bounds = np.concatenate(
            [np.full((len(m), 1), -SPAN), breaks, np.full((len(m), 1), SPAN)], axis=1
        )
        total = [np.zeros(len(m)) for _ in range(4)]
        for piece in range(pieces):
            g, w = _segment_rule(bounds[:, piece], bounds[:, piece + 1], panels)
            values = np.asarray(function(m[:, None] + c[:, None] * g), dtype=float)
            weighted = w * values
            total[0] += weighted.sum(axis=1)
            total[1] += (weighted * g).sum(axis=1)
            total[2] += (weighted * values).sum(axis=1)
            total[3] += (weighted * (g * g - 1)).sum(axis=1)
        for whole, part in zip(moments, total, strict=True):
            whole[start : start + chunk] = part
    return GaussianMoments(*moments)


def _relu_moments(shift: np.ndarray, scale: np.ndarray) -> GaussianMoments:
    """Closed forms with ``a = m/c``: ``mΦ(a) + cφ(a)``, ``cΦ(a)``, ``(m² + c²)Φ(a) + mcφ(a)``,
    ``cφ(a)``."""
    a = shift / scale
    cdf = special.ndtr(a)
    pdf = np.exp(-a * a / 2) / np.sqrt(2 * np.pi)
    return GaussianMoments(
        shift * cdf + scale * pdf,
        scale * cdf,
        (shift * shift + scale * scale) * cdf + shift * scale * pdf,
        scale * pdf,
    )


def gaussian_moments(
    function: Function,
    shift: np.ndarray | float,
    scale: np.ndarray | float,
    kinks: tuple[float, ...] = (),
    *,
    closed_form: str | None = None,
) -> GaussianMoments:
    """``E f(m + c g)``, ``E[f(m + c g) g]``, ``E f(m + c g)²`` for ``g ~ N(0, 1)``.

    Parameters
    ----------
    function : callable
        f, numpy in and out, elementwise.
    shift, scale : array_like
        m and c ≥ 0, broadcast to one shape S. ``c = 0`` gives ``f(m)``, 0, ``f(m)²`` and 0.
    kinks : tuple of float
        Points where f or its derivative jumps; the quadrature is split at ``(kink − m)/c``.
    closed_form : {"relu"} or None
        Use the closed form of that function instead of quadrature.

    Returns
    -------
    GaussianMoments
        mean, cross, second, quadratic: arrays of shape S, accurate to ~1e-13 relative for smooth f
        whose variation the panels resolve: more of them above ``c = WIDE_SCALE``, up to
        ``c ≈ 128``; a function oscillating on a finer scale (sin at large c) is not.

    Examples
    --------
    >>> from giantstep.theory.gaussian import gaussian_moments
    >>> moments = gaussian_moments(lambda x: x * x, 1.0, 2.0)
    >>> round(float(moments.mean), 12), round(float(moments.cross), 12)
    (5.0, 4.0)
    """
    m, c = np.broadcast_arrays(np.asarray(shift, dtype=float), np.asarray(scale, dtype=float))
    shape = m.shape
    m, c = m.ravel(), c.ravel()
    if np.any(c < 0) or not (np.isfinite(m).all() and np.isfinite(c).all()):
        raise ValueError("Gaussian moments need finite shifts and scales ≥ 0")
    mean, cross, second = np.empty(len(m)), np.zeros(len(m)), np.empty(len(m))
    quadratic = np.zeros(len(m))
    degenerate = c == 0
    if degenerate.any():
        values = np.asarray(function(m[degenerate]), dtype=float)
        mean[degenerate], second[degenerate] = values, values * values
    spread = ~degenerate
    if spread.any():
        if closed_form == "relu":
            moments = _relu_moments(m[spread], c[spread])
        elif closed_form is None:
            moments = _quadrature_moments(function, tuple(kinks), m[spread], c[spread])
        else:
            raise ValueError(f"no closed form for {closed_form!r}")
        mean[spread], cross[spread], second[spread] = moments.mean, moments.cross, moments.second
        quadratic[spread] = moments.quadratic
    return GaussianMoments(*(x.reshape(shape) for x in (mean, cross, second, quadratic)))


def activation_moments(
    activation: Activation, shift: np.ndarray | float, scale: np.ndarray | float
) -> GaussianMoments:
    """:func:`gaussian_moments` of a student activation (closed forms for relu)."""
    return gaussian_moments(
        activation.function,
        shift,
        scale,
        activation.kinks,
        closed_form="relu" if activation.name == "relu" else None,
    )


@dataclass(frozen=True)
class ActivationConstants:
    """Gaussian constants of σ at unit input variance (THEORY-ERRORS.md §1).

    mu: ``μ_0 .. μ_3``; second_moment: ``E σ²``; nonlinear: ``μ*² = E σ² − μ_0² − μ_1²``;
    slope_variance: ``Var σ′ = E σ′² − μ_1²``.
    """

    mu: np.ndarray
    second_moment: float
    nonlinear: float
    slope_variance: float


def activation_constants(activation: Activation) -> ActivationConstants:
    """The constants of σ, by quadrature split at its kinks (accurate to ~1e-12)."""
    mu = activation.hermite_coefficients(3)
    second = gaussian_expectation(lambda x: activation.function(x) ** 2, activation.kinks)
    slope_second = gaussian_expectation(
        lambda x: activation.derivative_function(x) ** 2, activation.kinks
    )
    return ActivationConstants(
        mu=mu,
        second_moment=second,
        nonlinear=second - mu[0] ** 2 - mu[1] ** 2,
        slope_variance=slope_second - mu[1] ** 2,
    )


@dataclass(frozen=True)
class NeuronConstants:
    """Gaussian constants of ``σ(w_j·x)`` for rows of norms ``‖w_j‖`` (each (N,)).

    mean ``E σ``, slope ``E σ′`` (the coefficient of ``w_j·x``), curvature ``E σ″``,
    nonlinear ``E σ² − mean² − ‖w_j‖² slope²``, slope_variance ``Var σ′``, at input variance
    ``‖w_j‖²``. For unit rows they are ``μ_0, μ_1, μ_2, μ*², Var σ′``.
    """

    mean: np.ndarray
    slope: np.ndarray
    curvature: np.ndarray
    nonlinear: np.ndarray
    slope_variance: np.ndarray


def neuron_constants(activation: Activation, norms: np.ndarray) -> NeuronConstants:
    """Per-neuron constants for rows of the given norms (N,) > 0 (Stein: ``E σ′ = E[σ g]/‖w‖``)."""
    norms = np.asarray(norms, dtype=float)
    if np.any(norms <= 0):
        raise ValueError("every first-layer row needs a positive norm")
    # Equal norms (sphere rows, to rounding) share one evaluation.
    unique, inverse = np.unique(np.round(norms, 13), return_inverse=True)
    moments = activation_moments(activation, np.zeros_like(unique), unique)
    slope = moments.cross / unique
    curvature, slope_second = np.empty(len(unique)), np.empty(len(unique))
    for i, norm in enumerate(unique):
        # σ(‖w‖ g) has its kinks at g = kink/‖w‖.
        x, w = gaussian_rule(tuple(k / norm for k in activation.kinks))
        curvature[i] = w @ (activation.function(norm * x) * (x * x - 1)) / norm**2
        slope_second[i] = w @ activation.derivative_function(norm * x) ** 2
    nonlinear = moments.second - moments.mean**2 - moments.cross**2
    return NeuronConstants(
        mean=moments.mean[inverse],
        slope=slope[inverse],
        curvature=curvature[inverse],
        nonlinear=np.maximum(nonlinear, 0.0)[inverse],
        slope_variance=(slope_second - slope**2)[inverse],
    )


def spike_rule(
    nodes: int, kinks: tuple[float, ...] = (), cosine: float = 0.0, sine: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``s_q`` and weights ``w_q`` (Q,), ``Σ w_q = 1``, for ``E_s`` over ``s ~ N(0, 1)``.

    Probabilists' Gauss–Hermite with ``nodes`` points: the integrands are Gaussian convolutions,
    smooth in s. A target with kinks seen through a small ``sine = ρ`` (``y ≈ σ*(γ s)``) is not
    smooth in s; then a composite rule split at ``s = kink/γ`` is used instead (more nodes).
    """
    if nodes < 1:
        raise ValueError(f"the spike quadrature needs at least one node, got {nodes}")
    if kinks and sine < 0.25 and cosine != 0:
        x, w = gaussian_rule(tuple(k / cosine for k in kinks), 8.0, 1.0, 10)
        return x, w / w.sum()
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return x, w / w.sum()
