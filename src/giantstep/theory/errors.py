"""Deterministic equivalents of the ridge readout's test and training errors (THEORY-ERRORS.md).

Three predictions of the errors the run measures, from one solver — ridge on features that are
Gaussian-equivalent *conditionally on the spike coordinate* ``s = v·x`` — fed three ways:

- ``random_features`` (level 1): ridge on the initial features ``F₀``; the run's own prediction
  when ``train.steps = 0``, the random-features baseline otherwise (:func:`random_features_errors`);
- ``spiked`` (levels 2–3): the layer one step is *predicted* to give from the config, W₀, a and β
  (:func:`predicted_features`), β-amplification included;
- ``trained_layer``: conditional on the run's actual W₁ (:func:`trained_layer_features`).

:func:`predict_errors` is the run's one-line entry point; :func:`predict_learning_curve` gives
the same for a grid of ridge-set sizes, reusing every decomposition.

Conventions (giantstep's)
-------------------------
Inputs ``x ~ N(0, I_d)``; target ``y = σ*(β·x) + ε``, ``‖β‖ = 1``, ``ε ~ N(0, σ_ε²)``. Features
``φ(x) = σ(W x) ∈ R^N`` (no output scale s, no a). Ridge ``â = argmin (1/n)‖y − F a‖² + λ‖a‖²``,
no intercept, ``n = readout.samples``; test error ``E(y − φᵀâ)²`` on fresh data (σ_ε² included),
training error ``(1/n)‖y − Fâ‖²`` on the ridge set. ``n₀ = train.batch_size`` is the gradient
batch (a fresh set). Hermite ``μ_k(f) = E[f(g) He_k(g)]``. The per-neuron step is
``η_j = η s a_j`` (``η = config.step_size()``), since the step is
``w_j ← w_j + η_j (1/n₀) Σ_i ỹ_i σ′(w_j·x_i) x_i`` with ``ỹ = y`` or ``y − f``.

Level 1 (§2): ``φ ≈ μ0 + μ1 W₀x + μ* ξ``, ``Σ = μ0²11ᵀ + μ1²W₀W₀ᵀ + μ*²I`` (per-neuron constants
for rows of norm ≠ 1), ``Φ = μ0μ0(σ*)1 + μ1μ1(σ*)W₀β``; κ solves ``κ − λ = (κ/n)Σ e_i/(e_i + κ)``
and ``E_test = (E y² − Σ p_i²(e_i + 2κ)/(e_i + κ)²)/(1 − df2/n)``, ``E_train = (λ/κ)² E_test``.
This is the conditional solver without spike (one node, the mean folded into Σ); one
eigendecomposition of Σ serves every n and λ.

Levels 2–3 (§3.2–3.3): ``W₁x = h + (m + r)s``, ``h = W_b Π_v x`` Gaussian with covariance
``Ω = W_b Π_v W_bᵀ``; given s, neuron j is ``μ0_j(s) + μ1_j(s) h_j + μ2_j(s) ξ_j`` with the
moments of ``σ(r_j s + c_j g)``. Self-energies ``V_q = Tr(Σ_q G)/n``,
``G = (λ + Σ_q w_q Σ_q/(1 + V_q))⁻¹`` on Gauss–Hermite nodes ``s_q``; the mean part
``M = G⁻¹ + Σ_q w_q μ_q μ_qᵀ/(1 + V_q)``; the conditional errors ``e_q`` solve a Q × Q system;
``E_test = Σ w_q e_q``, ``E_train = Σ w_q e_q/(1 + V_q)²``.

The mapping of one step (§3.1, the ``spiked`` variant)
-----------------------------------------------------
Expanding ``σ′ = μ1 + μ2 He₁ + …`` with ``η_j = O(1)``: spike ``W₁ ≈ W_b + r vᵀ``,
``v = ζ/‖ζ‖``, ``ζ = X₀ᵀỹ/n₀``, ``‖ζ‖² = μ1(ỹ)² + E[ỹ²] d/n₀``, ``γ = cos(v, β) = μ1(ỹ)/‖ζ‖``,
``r_j = η_j μ1 ‖ζ‖``; bulk ``W_b,j = c_j w_j + η_j μ2 μ2(ỹ)(w_j·β)β`` with
``c_j² = (1 + η_j E[ỹ]μ2)² + η_j² E[ỹ²] Var(σ′) d/n₀``. The last term is the
**β-amplification** (Mehler k = 1 of ``E[σ*′(u)(σ′(g) − μ1)]``): without it the prediction is
~35 % too high for relu × ``z1 + He2(z1)/2``. The spike's component ⊥ β is a random unit vector
independent of W₀ (drawn from ``generator(seed, SPIKE_DIRECTION)``); one draw moves the
prediction by about ±5 % at N = 400 (±3 % at N = 1000), as the network's own ζ moves its error.
Residual ``"y"``: ``ỹ = y``. Residual ``"y-f"`` only when the network's output is a constant to
``O(N^-1/2)`` (``s‖a‖ ≤ N^-1/2``: the ``ones``/``dandi`` second layers at s = 1/N): then
``ỹ = y − f̄``, ``f̄ = s Σ_j a_j μ0``.

=====================================  =======================================================
Cui et al. (arXiv 2402.04980)          giantstep
=====================================  =======================================================
``(1/√p) Σ a_j σ(w_j·x)``, a_j = 1/√p  ``preset = "dandi"``, ``model.second_layer = "ones"``
                                       (s = 1/N, a_j = 1); for odd σ ``"signs"`` is the same
step ``η = η̃ p`` on (1/2n)Σ(y − f)²     ``train.step_size = {scale = η̃, width_exponent = 1}``
                                       (η_j = η̃), ``train.residual = "y-f"``
α₀ = n₀/d                              ``train.batch_size / dim``
α = n/d                                ``readout.samples / dim``
ridge λ_C on Σ_i (y_i − φ_iᵀw/√p)²     ``readout.ridge`` = λ_C · N / readout.samples
equal a_j (homogeneous spikes)         ``moniri`` at their scale (η = η̃√N, width_exponent = ½):
                                       η_j ~ η̃ N(0, 1), heterogeneous spikes
Moniri et al.: η = c n₀^α              η_j = c n₀^α a_j = O(n₀^(α−½)): small spikes (level 3)
=====================================  =======================================================

Regime (§4) and what the variants report outside it
---------------------------------------------------
Trustworthy for proportional ``n, n₀, d, N`` (tested ``n/d, n₀/d, N/d`` in [1, 32]), one step,
Gaussian inputs, ``λ ∈ [1e-3, 1]``, per-neuron steps ``|η_j| ≲ 2``. Level 1: any σ, σ* with a
finite fourth moment, within ~2 % (He₂ targets at small λ near ``n ≈ N``: up to 6 %, the
simulation higher). ``spiked``: accurate when ``μ2(σ)μ2(σ*) = 0`` or ``n₀/d`` is large
(≥ 32 for relu × He₂ at η̃ = 1; the default, ``n₀ = 4d`` with ``η_j`` ≈ 0.76 rms, runs
−3.5 … −2.5 % at d = 1000 over 10 seeds);
otherwise the bulk ``W₀(I + ημ2Ĉ)`` has outliers the isotropic model misses and the
prediction runs up to ~15 % low — ``spiked.warning`` says so and points to ``trained_layer``.
``trained_layer``: within ~2 % wherever tested, relu × He₂ at ``n₀ = 2d`` included. Training
errors: within ±3 % of the simulation at ``n ≥ 2N`` (N = 1000; below it for He₂ targets, above it
for tanh(z1), where the training error is ~0.03), 4–8 % below at N = 400 with He₂ targets, and
off by up to 25–44 % at ``n = N`` (an O(1/n) bias of a small number).

Out of scope, a variant's ``errors`` is None and ``reason`` names the key: non-Gaussian
``data.distribution`` (all three); ``train.steps > 1`` or a target of rank > 1 (``spiked`` and
``trained_layer``; ``random_features`` stays the F₀ baseline, which holds for any rank);
``train.steps = 0`` (no step: ``random_features`` is the prediction); ``train.residual = "y-f"``
with an output of order one (``moniri``'s Gaussian second layer): ``spiked`` only.

``trained_layer`` with ``moniri`` and ``train.residual = "y-f"`` **is reported**: it conditions on
the W₁ the step produced, whatever tilted its direction towards ``W₀ᵀa``. Checked against the
default config with ``y − f`` (test.samples = 32000): theory − simulation −1.5 … +0.7 % at
d = N = 1000 (4 seeds, per-seed spread 1.2 %) and +0.9 … +1.0 % at d = 400 (8 seeds), the same
accuracy as with residual y (−1.9 … −1.0 % and +0.1 … +0.7 %).

Numerics
--------
Gaussian integrals by split Gauss–Legendre (:mod:`giantstep.theory.gaussian`, closed forms for
relu); Q = 31 Gauss–Hermite nodes in s (Q = 21 and 41 agree to ~1e-6 at n ≥ 2N). Equal neurons
(the predicted layer of ``ones``; odd σ with ``signs``, after flipping the neurons with
``r_j < 0``) take the homogeneous path: one eigendecomposition of Ω, O(N) per iteration and
per (n, λ). Otherwise (``moniri``: ``r_j ∝ a_j``; any ``trained_layer``) each self-energy
iteration is one N × N Cholesky inverse, Anderson-accelerated and warm-started along the ridge
path (large λ first) and along n; the fluctuation system costs two N × N products per Krylov
dimension (~4 per λ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

from giantstep.activations import Activation
from giantstep.linalg import symmetric_eigh, top_singular_triplet
from giantstep.targets import Target
from giantstep.theory.gaussian import (
    activation_moments,
    gaussian_moments,
    neuron_constants,
    spike_rule,
)

#: Gauss–Hermite nodes of the spike coordinate s (THEORY-ERRORS.md §3.3; 21 and 41 agree to 1e-6).
SPIKE_NODES = 31
#: Stop the self-energy iteration when ``max_q |ΔV_q| / (1 + V_q)`` falls below this.
SELF_ENERGY_TOLERANCE = 1e-10
#: Relative residual of the Q × Q fluctuation system (I − B) e = a.
FLUCTUATION_TOLERANCE = 1e-12
#: Below this a Hermite coefficient, a cosine or a spread counts as zero.
ZERO = 1e-9


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RidgeCurve:
    """Predicted errors on a grid: samples (S,) ridge-set sizes, ridges (L,) ridge values,
    test and train (S, L) mean squared errors (the test error includes the label noise)."""

    samples: np.ndarray
    ridges: np.ndarray
    test: np.ndarray
    train: np.ndarray


def _grid(samples: int | Sequence[int], ridges: float | Sequence[float]):
    n = np.atleast_1d(np.asarray(samples, dtype=float))
    lam = np.atleast_1d(np.asarray(ridges, dtype=float))
    if n.ndim != 1 or lam.ndim != 1 or not len(n) or not len(lam):
        raise ValueError("samples and ridges must be non-empty numbers or 1-D sequences")
    if np.any(n <= 0) or np.any(lam <= 0) or not (np.isfinite(n).all() and np.isfinite(lam).all()):
        raise ValueError("the ridge-set sizes and the ridge values must be finite and positive")
    return n, lam


# --------------------------------------------------------------------------------------------
# Level 1: random features (§2)
# --------------------------------------------------------------------------------------------


def ridge_kappa(eigenvalues: np.ndarray, samples: np.ndarray, ridges: np.ndarray) -> np.ndarray:
    """The root ``κ > λ`` of ``κ − λ = (κ/n) Σ_i e_i/(e_i + κ)`` for every (n, λ): (S, L).

    The left side minus the right is convex in κ and negative at ``κ = λ``, so the root above λ
    is unique; bisection on ``[λ, λ + Σ e/n + 1]`` to the last bit. The bisection halves an
    interval of width ~1 down to a few ulps of κ, which can be as small as λ: up to ~1100 halvings
    for the smallest ridges (200, the former cap, left κ wrong below λ ≈ 1e-55, and the predicted
    training error collapsed to 0); ~55 for ridges of order 1e-3.
    """
    e = np.clip(np.asarray(eigenvalues, dtype=float), 0.0, None)
    n = np.asarray(samples, dtype=float)[:, None, None]
    lam = np.asarray(ridges, dtype=float)[None, :, None]
    low = np.broadcast_to(lam, (n.shape[0], lam.shape[1], 1)).copy()
    high = low + e.sum() / n + 1.0
    for _ in range(1100):
        middle = (low + high) / 2
        excess = middle - lam - middle / n * np.sum(e / (e + middle), axis=-1, keepdims=True)
        above = excess > 0
        high = np.where(above, middle, high)
        low = np.where(above, low, middle)
        if np.all(high - low <= 4 * np.finfo(float).eps * high):
            break
    return ((low + high) / 2)[..., 0]


def spectral_ridge_errors(
    eigenvalues: np.ndarray,
    projections: np.ndarray,
    second_moment: float,
    samples: int | Sequence[int],
    ridges: float | Sequence[float],
) -> RidgeCurve:
    """Ridge errors of the Gaussian covariate model from the spectrum of ``Σ = E φφᵀ``.

    Parameters
    ----------
    eigenvalues : ndarray, shape (N,)
        ``e_i`` of the feature second-moment matrix Σ.
    projections : ndarray, shape (N,)
        ``p_i = u_iᵀ Φ``, ``Φ = E[φ y]`` in Σ's eigenbasis.
    second_moment : float
        ``E y²`` (label noise included).
    samples, ridges : int or sequence
        Ridge-set sizes n (S,) and ridge values λ (L,).

    Returns
    -------
    RidgeCurve
        ``E_test = (E y² − Σ p_i² (e_i + 2κ)/(e_i + κ)²) / (1 − df2/n)`` (the bias-plus-noise
        form of §2, written without dividing by e_i) and ``E_train = (λ/κ)² E_test``.

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.theory.errors import spectral_ridge_errors
    >>> curve = spectral_ridge_errors(np.ones(10), np.zeros(10), 1.0, 20, 1e6)
    >>> round(float(curve.test[0, 0]), 6)
    1.0
    """
    n, lam = _grid(samples, ridges)
    e = np.asarray(eigenvalues, dtype=float)
    p2 = np.asarray(projections, dtype=float) ** 2
    if e.ndim != 1 or p2.shape != e.shape:
        raise ValueError(
            f"eigenvalues and projections: two vectors of one length N, got shapes {e.shape} "
            f"and {p2.shape} (they broadcast silently into other numbers)"
        )
    if not (np.isfinite(e).all() and np.isfinite(p2).all()):
        raise ValueError("eigenvalues and projections must be finite")
    if not (np.isfinite(second_moment) and second_moment >= 0):
        raise ValueError(f"second_moment: E y² must be finite and >= 0, got {second_moment}")
    e = np.clip(e, 0.0, None)
    kappa = ridge_kappa(e, n, lam)[..., None]
    explained = np.sum(p2 * (e + 2 * kappa) / (e + kappa) ** 2, axis=-1)
    df2 = np.sum(e**2 / (e + kappa) ** 2, axis=-1)
    test = (second_moment - explained) / (1 - df2 / n[:, None])
    train = (lam[None, :] / kappa[..., 0]) ** 2 * test
    return RidgeCurve(n, lam, test, train)


@dataclass(frozen=True)
class TargetMoments:
    """What the level-1 theory needs of ``y = g*(W* x) + ε``.

    mean ``E g*``, linear ``C_1 = E[g*(h) h]`` (r,), second ``E y²`` (noise included).
    """

    mean: float
    linear: np.ndarray
    second: float

    @classmethod
    def of(cls, target: Target, noise: float = 0.0) -> TargetMoments:
        """The moments of ``target`` with label noise of standard deviation ``noise``."""
        return cls(
            target.expectation(),
            np.asarray(target.linear_coefficients(), dtype=float),
            target.second_moment(noise),
        )


def random_features_errors(
    first_layer: np.ndarray,
    activation: Activation,
    target: Target,
    directions: np.ndarray,
    noise: float,
    samples: int | Sequence[int],
    ridges: float | Sequence[float],
) -> RidgeCurve:
    """Level 1: ridge on ``σ(W x)`` with a fixed first layer (Gaussian equivalence, §2).

    ``φ(x) ≈ μ0 + D1 W x + D* ξ`` per neuron (``μ0_j, D1_jj, D*_jj`` the Gaussian constants of
    ``σ(w_j·x)``; ``μ_0, μ_1, μ*`` for unit rows), so ``Σ = μ0μ0ᵀ + D1 W Wᵀ D1 + D*²`` and
    ``Φ = E[g*] μ0 + D1 W W*ᵀ C_1``; the non-linear part of the target acts as noise. Σ also
    keeps the second Mehler term off its diagonal, ``½ D2 (W Wᵀ)^{∘2} D2`` (``D2_jj = E σ″``):
    each entry is O(1/d), but they add up along the mean direction — the neurons' He₂ parts
    share ``‖x‖²/d − 1`` — and without them a target with a mean came out too easy (a constant
    target 27 % low with relu at N = d = 300; zero-mean targets move by < 0.3 %). One
    eigendecomposition of Σ serves every n and λ.

    Parameters
    ----------
    first_layer : ndarray, shape (N, d)
        The rows ``w_j`` (any norms; the presets draw unit rows).
    activation : Activation
        σ.
    target : Target
        g*, of any rank r.
    directions : ndarray, shape (r, d)
        ``W*``, orthonormal rows.
    noise : float
        Label-noise standard deviation ``σ_ε``.
    samples, ridges : int or sequence
        Ridge-set sizes n (S,) and ridge values λ (L,).

    Returns
    -------
    RidgeCurve
        test, train: (S, L).

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.activations import get_activation
    >>> from giantstep.targets import parse_target
    >>> from giantstep.theory.errors import random_features_errors
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((60, 40))
    >>> w /= np.linalg.norm(w, axis=1, keepdims=True)
    >>> beta = np.eye(40)[:1]
    >>> curve = random_features_errors(w, get_activation("tanh"), parse_target("tanh(z1)"),
    ...                                beta, 0.0, [80, 160], [1e-2, 1e-1])
    >>> curve.test.shape
    (2, 2)
    """
    w = np.asarray(first_layer, dtype=float)
    moments = TargetMoments.of(target, noise)
    constants = neuron_constants(activation, np.linalg.norm(w, axis=1))
    scaled = constants.slope[:, None] * w
    sigma = scaled @ scaled.T
    sigma += np.outer(constants.mean, constants.mean)
    overlaps = w @ w.T
    second = 0.5 * np.outer(constants.curvature, constants.curvature) * overlaps * overlaps
    second[np.diag_indices_from(second)] = 0.0  # the diagonal is Eσ² already, with D*²
    sigma += second
    sigma[np.diag_indices_from(sigma)] += constants.nonlinear
    cross = moments.mean * constants.mean + scaled @ (np.asarray(directions).T @ moments.linear)
    eigenvalues, eigenvectors = symmetric_eigh(sigma)
    return spectral_ridge_errors(
        eigenvalues, eigenvectors.T @ cross, moments.second, samples, ridges
    )


# --------------------------------------------------------------------------------------------
# Levels 2–3: the trained layer as spiked random features (§3.1, §3.4)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpikedFeatures:
    """The trained first layer as the conditional solver sees it (§3.2).

    ``W₁ x = h + (m + r) s`` with ``s = v·x``, ``h = W_b Π_v x``. Shapes: N neurons.

    spike: r (N,); bulk_gram: ``Ω = W_b Π_v W_bᵀ`` (N, N); bulk_scale: c (N,), the conditional
    standard deviation of ``h_j`` used inside σ; bulk_along_spike: ``m = W_b v`` (N,);
    bulk_along_target: ``t = W_b b⊥`` (N,); cosine: ``γ = v·β`` (``β = γ v + ρ b⊥``).
    """

    spike: np.ndarray
    bulk_gram: np.ndarray
    bulk_scale: np.ndarray
    bulk_along_spike: np.ndarray
    bulk_along_target: np.ndarray
    cosine: float

    @property
    def width(self) -> int:
        """N, the number of neurons."""
        return len(self.spike)

    @property
    def coherence(self) -> float:
        """``κ``, the mean over neuron pairs ``i ≠ j`` of ``Ω_ij² / (c_i² c_j²)`` (``≈ 1/d`` for
        random rows): the strength of the He₂ part the neurons share (:func:`spiked_errors`)."""
        if self.width < 2:
            return 0.0
        scale = np.where(self.bulk_scale > 0, self.bulk_scale, np.inf)
        normalised = self.bulk_gram / np.outer(scale, scale)
        off = np.sum(normalised * normalised) - np.sum(np.diag(normalised) ** 2)
        return float(off) / (self.width * (self.width - 1))

    @classmethod
    def from_layer(
        cls,
        bulk: np.ndarray,
        spike: np.ndarray,
        direction: np.ndarray,
        target_direction: np.ndarray,
        bulk_scale: np.ndarray | None = None,
    ) -> SpikedFeatures:
        """From ``W = W_b + r vᵀ``: bulk (N, d), spike r (N,), direction v (d,), β (d,).

        bulk_scale: c (N,); default ``‖Π_v W_b,j‖`` (the exact conditional standard deviation).
        """
        bulk = np.asarray(bulk, dtype=float)
        v = np.asarray(direction, dtype=float)
        v = v / np.linalg.norm(v)
        beta = np.asarray(target_direction, dtype=float)
        beta = beta / np.linalg.norm(beta)
        gamma = float(np.clip(v @ beta, -1.0, 1.0))
        along_spike = bulk @ v
        gram = bulk @ bulk.T
        gram -= np.outer(along_spike, along_spike)
        rho = math.sqrt(max(0.0, 1 - gamma * gamma))
        orthogonal = (beta - gamma * v) / rho if rho > ZERO else np.zeros_like(beta)
        if bulk_scale is None:
            bulk_scale = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        return cls(
            spike=np.asarray(spike, dtype=float).copy(),
            bulk_gram=gram,
            bulk_scale=np.asarray(bulk_scale, dtype=float).copy(),
            bulk_along_spike=along_spike,
            bulk_along_target=bulk @ orthogonal,
            cosine=gamma,
        )


def trained_layer_features(
    initial_layer: np.ndarray, trained_layer: np.ndarray, target_direction: np.ndarray
) -> SpikedFeatures:
    """§3.4, conditional on the run's W₁: v the top right singular vector of ``W₁ − W₀``.

    ``r_j = (W₁ − W₀)_j·v``, ``W_b = W₁ − r vᵀ`` (keeps W₀'s own component along v),
    ``c_j = ‖Π_v W_b,j‖``, ``γ = v·β`` (the sign of v is chosen so that γ ≥ 0). A zero update
    gives the spike-free layer (r = 0, v = β).

    Parameters
    ----------
    initial_layer, trained_layer : ndarray, shape (N, d)
        W₀ and W₁.
    target_direction : ndarray, shape (d,)
        β.

    Returns
    -------
    SpikedFeatures

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.theory.errors import trained_layer_features
    >>> rng = np.random.default_rng(0)
    >>> w0 = rng.standard_normal((30, 20)) / np.sqrt(20)
    >>> beta = np.eye(20)[0]
    >>> w1 = w0 + np.outer(rng.standard_normal(30), beta)
    >>> round(trained_layer_features(w0, w1, beta).cosine, 6)
    1.0
    """
    w0 = np.asarray(initial_layer, dtype=float)
    w1 = np.asarray(trained_layer, dtype=float)
    beta = np.asarray(target_direction, dtype=float)
    update = w1 - w0
    if not np.any(update):
        return SpikedFeatures.from_layer(w1, np.zeros(len(w1)), beta, beta)
    _, _, v = top_singular_triplet(update)
    if v @ beta < 0:
        v = -v
    spike = update @ v
    return SpikedFeatures.from_layer(w1 - np.outer(spike, v), spike, v, beta)


@dataclass(frozen=True)
class ResidualStatistics:
    """The residual ``ỹ`` the step multiplies (``y`` or ``y − f̄``), §3.1.

    mean ``E ỹ``, second ``E ỹ²``, linear ``μ_1(ỹ)``, quadratic ``μ_2(ỹ)`` along β.
    """

    mean: float
    second: float
    linear: float
    quadratic: float

    @classmethod
    def of(cls, target: Target, noise: float = 0.0, offset: float = 0.0) -> ResidualStatistics:
        """``ỹ = σ*(β·x) + ε − offset`` (offset: the network's constant output ``f̄``)."""
        if target.rank != 1:
            raise ValueError(f"the spiked theory needs a rank-1 target, got rank {target.rank}")
        mean = target.expectation()
        return cls(
            mean=mean - offset,
            second=target.second_moment(noise) - 2 * offset * mean + offset**2,
            linear=float(target.linear_coefficients()[0]),
            quadratic=target.expectation(lambda h: h[:, 0] ** 2 - 1),
        )


def predicted_features(
    initial_layer: np.ndarray,
    neuron_steps: np.ndarray,
    activation: Activation,
    residual: ResidualStatistics,
    batch_size: int,
    target_direction: np.ndarray,
    rng: np.random.Generator,
    *,
    beta_amplification: bool = True,
) -> SpikedFeatures:
    """§3.1, the "annealed" mapping: the layer one step is predicted to give.

    With ``η_j`` the per-neuron step and ``ζ = X₀ᵀỹ/n₀``:
    ``‖ζ‖² = μ1(ỹ)² + E ỹ² d/n₀``, ``γ = μ1(ỹ)/‖ζ‖``, spike ``r_j = η_j μ1 ‖ζ‖`` along
    ``v = γβ + ρu`` (u a random unit vector ⊥ β drawn from ``rng``, independent of W₀); bulk
    ``W_b,j = c_j w_j + η_j μ2 μ2(ỹ)(w_j·β) β`` with
    ``c_j² = (1 + η_j E[ỹ] μ2)² + η_j² E[ỹ²] Var(σ′) d/n₀`` (for rows of norm ≠ 1 the constants
    are those of ``σ(w_j·x)`` and the first term is scaled by ``‖w_j‖²``).

    Parameters
    ----------
    initial_layer : ndarray, shape (N, d)
        W₀.
    neuron_steps : ndarray, shape (N,)
        ``η_j = η s a_j``.
    activation : Activation
        σ.
    residual : ResidualStatistics
        Moments of ỹ.
    batch_size : int
        n₀, the gradient batch.
    target_direction : ndarray, shape (d,)
        β (unit).
    rng : numpy.random.Generator
        Draws the spike's component ⊥ β.
    beta_amplification : bool
        Keep the term ``η_j μ2 μ2(ỹ)(w_j·β) β`` (False: the plain spiked model, a control).

    Returns
    -------
    SpikedFeatures

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.activations import get_activation
    >>> from giantstep.targets import parse_target
    >>> from giantstep.theory.errors import ResidualStatistics, predicted_features
    >>> rng = np.random.default_rng(0)
    >>> w0 = rng.standard_normal((50, 40))
    >>> w0 /= np.linalg.norm(w0, axis=1, keepdims=True)
    >>> stats = ResidualStatistics.of(parse_target("z1 + He2(z1)/2"))
    >>> layer = predicted_features(w0, np.ones(50), get_activation("relu"), stats, 80,
    ...                            np.eye(40)[0], rng)
    >>> round(layer.cosine, 4)  # 1/sqrt(1 + 1.5 · 40/80)
    0.7559
    """
    w0 = np.asarray(initial_layer, dtype=float)
    beta = np.asarray(target_direction, dtype=float)
    beta = beta / np.linalg.norm(beta)
    dim = w0.shape[1]
    eta = np.asarray(neuron_steps, dtype=float)
    norms = np.linalg.norm(w0, axis=1)
    constants = neuron_constants(activation, norms)
    zeta_norm = math.sqrt(residual.linear**2 + residual.second * dim / batch_size)
    gamma = residual.linear / zeta_norm if zeta_norm > 0 else 0.0
    rho = math.sqrt(max(0.0, 1 - gamma * gamma))
    u = rng.standard_normal(dim)
    u -= (u @ beta) * beta
    u /= np.linalg.norm(u)
    direction = gamma * beta + rho * u
    own = 1 + eta * residual.mean * constants.curvature
    isotropic = eta**2 * residual.second * constants.slope_variance * dim / batch_size
    bulk_scale = np.sqrt(own**2 * norms**2 + isotropic)
    bulk = (bulk_scale / norms)[:, None] * w0
    if beta_amplification:
        amplification = eta * constants.curvature * residual.quadratic
        bulk += np.outer(amplification * (w0 @ beta), beta)
    spike = eta * constants.slope * zeta_norm
    return SpikedFeatures.from_layer(bulk, spike, direction, beta, bulk_scale)


# --------------------------------------------------------------------------------------------
# The conditional solver (§3.2–3.3)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedPoint:
    """V (Q,), the auxiliary value of the map at V, the iterations, and the iterates (k, Q)."""

    value: np.ndarray
    aux: object
    iterations: int
    history: np.ndarray


def solve_fixed_point(
    step: Callable[[np.ndarray], tuple[np.ndarray, object]],
    start: np.ndarray,
    *,
    tolerance: float = SELF_ENERGY_TOLERANCE,
    max_iterations: int = 20_000,
    accelerate: bool = True,
    depth: int = 5,
    keep_history: bool = False,
) -> FixedPoint:
    """``V = F(V)`` for the self-energies, from ``start`` (V ≥ 0).

    F is increasing and bounded (§3.3), so the plain iteration from below rises monotonically to
    the fixed point; ``accelerate`` adds Anderson mixing (depth ``depth``) on top, safeguarded:
    a mixed point that is negative, not finite, or does not lower the residual is replaced by
    the plain step ``F(V)`` (from above the fixed point the plain iteration also converges,
    monotonically down). Stops when ``max_q |F(V)_q − V_q| / (1 + F(V)_q) < tolerance``.
    Raises RuntimeError if it does not converge in max_iterations.
    """
    x = np.asarray(start, dtype=float).copy()
    previous_x = previous_f = None
    steps_x: list[np.ndarray] = []
    steps_f: list[np.ndarray] = []
    history = [x.copy()] if keep_history else []
    best = math.inf
    for iteration in range(max_iterations):
        mapped, aux = step(x)
        if not np.isfinite(mapped).all():
            raise RuntimeError("the self-energy iteration produced non-finite values")
        residual = mapped - x
        size = float(np.max(np.abs(residual) / (1 + np.abs(mapped))))
        if size < tolerance:
            return FixedPoint(x, aux, iteration, np.array(history))
        if previous_x is not None:
            steps_x.append(x - previous_x)
            steps_f.append(residual - previous_f)
            del steps_x[:-depth], steps_f[:-depth]
        previous_x, previous_f = x, residual
        proposal = mapped
        if accelerate and steps_f and size < best:
            df = np.array(steps_f).T
            dx = np.array(steps_x).T
            coefficients, *_ = np.linalg.lstsq(df, residual, rcond=None)
            mixed = mapped - (dx + df) @ coefficients
            if np.isfinite(mixed).all() and np.all(mixed >= 0):
                proposal = mixed
        elif accelerate:
            # The residual grew: forget the secant information and take the plain step.
            steps_x.clear()
            steps_f.clear()
        best = min(best, size)
        x = proposal
        if keep_history:
            history.append(x.copy())
    raise RuntimeError(f"the self-energy iteration did not converge in {max_iterations} steps")


@dataclass(frozen=True)
class _NodeFunctions:
    """The conditional Gaussian equivalent at the spike nodes (§3.2). Q nodes, N neurons.

    slope ``μ1_j(s_q)`` (N, Q) or (1, Q) when homogeneous; residual ``μ2_j(s_q)²``; mean
    ``μ0_j(s_q)``; radial ``ν_j(s_q)``, the coefficient of the shared radial variable u
    (:func:`spiked_errors`), each (N, Q) or (1, Q); target ``h, h1, hh`` (Q,); weights (Q,);
    nodes (Q,).
    """

    nodes: np.ndarray
    weights: np.ndarray
    mean: np.ndarray
    slope: np.ndarray
    residual: np.ndarray
    radial: np.ndarray
    target_mean: np.ndarray
    target_cross: np.ndarray
    target_second: np.ndarray


def _is_odd(activation: Activation) -> bool:
    x = np.linspace(-6, 6, 97)
    return bool(np.allclose(activation(-x), -activation(x), rtol=1e-12, atol=1e-12))


def _node_functions(
    features: SpikedFeatures,
    activation: Activation,
    target: Target,
    noise: float,
    nodes: int,
    homogeneous: bool,
) -> _NodeFunctions:
    gamma = features.cosine
    rho = math.sqrt(max(0.0, 1 - gamma * gamma))
    kinks = tuple(target.kinks()) if target.kinked_arguments else ()
    s, w = spike_rule(nodes, kinks, gamma, rho)
    rows = slice(0, 1) if homogeneous else slice(None)
    r = features.spike[rows, None]
    c = features.bulk_scale[rows, None]
    moments = activation_moments(activation, r * s[None, :], np.broadcast_to(c, (len(r), len(s))))
    slope = moments.cross / c
    radial = moments.quadratic * math.sqrt(features.coherence / 2)
    residual = np.maximum(moments.second - moments.mean**2 - moments.cross**2 - radial**2, 0.0)

    def labels(x: np.ndarray) -> np.ndarray:
        return target(x.reshape(-1, 1)).reshape(x.shape)

    given = gaussian_moments(labels, gamma * s, rho, kinks)
    return _NodeFunctions(
        nodes=s,
        weights=w,
        mean=moments.mean,
        slope=slope,
        residual=residual,
        radial=radial,
        target_mean=given.mean,
        target_cross=given.cross,
        target_second=given.second + noise**2,
    )


def _spd_inverse_lower(matrix: np.ndarray) -> np.ndarray:
    """The lower triangle of the inverse of a symmetric positive definite matrix (N, N).

    Cholesky (LAPACK potrf + potri) in place: ``matrix`` (C-ordered) is overwritten. Its
    transpose is the same matrix in Fortran order, so LAPACK needs no copy; the strict upper
    triangle of the result is zero (symmetrising costs three more passes over N² entries,
    which the traces do not need).
    """
    lapack = scipy.linalg.lapack
    factor, info = lapack.dpotrf(matrix.T, lower=False, overwrite_a=True, clean=True)
    if info:
        raise np.linalg.LinAlgError("the regularised feature covariance is not positive definite")
    # potrf succeeded, so the factor's diagonal is positive and potri cannot fail.
    inverse, _ = lapack.dpotri(factor, lower=False, overwrite_c=True)
    return inverse.T


def _symmetric_from_lower(lower: np.ndarray) -> np.ndarray:
    full = lower + lower.T
    full[np.diag_indices_from(full)] /= 2
    return full


def _low_rank_core(weights: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """``C = R^½ (I + R^½ PᵀGP R^½)⁻¹ R^½`` for ``(G⁻¹ + P R Pᵀ)⁻¹ = G − GP C PᵀG``.

    weights: R's diagonal (k,) ≥ 0, or a PSD (k, k) matrix; gram: ``PᵀGP`` (k, k). The
    square-root form stays finite when R is singular (tanh: μ0 ≡ 0) or has tiny entries.
    """
    if weights.ndim == 1:
        root = np.diag(np.sqrt(weights))
    else:
        values, vectors = np.linalg.eigh((weights + weights.T) / 2)
        root = vectors * np.sqrt(np.clip(values, 0.0, None))
    inner = np.eye(root.shape[1]) + root.T @ gram @ root
    return root @ np.linalg.solve(inner, root.T)


def solve_fluctuations(
    apply: Callable[[np.ndarray], np.ndarray],
    rhs: np.ndarray,
    tolerance: float = FLUCTUATION_TOLERANCE,
) -> np.ndarray:
    """``e`` with ``(I − B) e = rhs``, given ``apply(e) = B e``, by GMRES from e = 0.

    One application of B per Krylov dimension and none more (an N × N solver pays two GEMMs
    for each). B's eigenvalues decay geometrically (the Σ_q are smooth in s), so a few
    dimensions reach ``‖rhs − (I − B)e‖ ≤ tolerance ‖rhs‖``. Raises RuntimeError if the whole
    space does not.
    """
    size = len(rhs)
    norm = float(np.linalg.norm(rhs))
    if norm == 0:
        return np.zeros(size)
    basis = np.zeros((size + 1, size))
    hessenberg = np.zeros((size + 1, size))
    basis[0] = rhs / norm
    for k in range(size):
        w = basis[k] - apply(basis[k])
        for _ in range(2):  # Gram–Schmidt twice keeps the basis orthogonal to rounding
            overlaps = basis[: k + 1] @ w
            hessenberg[: k + 1, k] += overlaps
            w -= overlaps @ basis[: k + 1]
        hessenberg[k + 1, k] = np.linalg.norm(w)
        target = np.zeros(k + 2)
        target[0] = norm
        coefficients, *_ = np.linalg.lstsq(hessenberg[: k + 2, : k + 1], target, rcond=None)
        residual = np.linalg.norm(target - hessenberg[: k + 2, : k + 1] @ coefficients)
        if residual <= tolerance * norm or hessenberg[k + 1, k] <= 1e-14 * norm:
            return coefficients @ basis[: k + 1]
        basis[k + 1] = w / hessenberg[k + 1, k]
    raise RuntimeError("the fluctuation system of the ridge theory did not converge")


class _HeterogeneousSolver:
    """§3.3 in full: one N × N Cholesky inverse per self-energy iteration."""

    def __init__(self, features: SpikedFeatures, functions: _NodeFunctions):
        self.omega = features.bulk_gram
        self.omega_diagonal = np.diag(self.omega).copy()
        self.f = functions
        self.slope = functions.slope
        self.residual = functions.residual
        # Conditional means μ_q = μ0(s_q) + D1(s_q) m s_q and cross-covariances t_q = D1(s_q) t.
        self.means = functions.mean + functions.slope * (
            features.bulk_along_spike[:, None] * functions.nodes[None, :]
        )
        self.cross = functions.slope * features.bulk_along_target[:, None]
        self.radial = functions.radial
        # M = G⁻¹ + Σ_q w̃_q (μ_q μ_qᵀ + ν_q ν_qᵀ): the means at u = ±1 averaged.
        self.low_rank = np.hstack([self.means, self.radial])  # (N, 2Q)
        self.width = len(features.spike)

    def covariance_sum(self, weights: np.ndarray) -> np.ndarray:
        """``Σ_q w_q Σ_q = Ω ∘ (U1 diag(w) U1ᵀ) + diag(U2² w)``: (N, N)."""
        total = (self.slope * weights) @ self.slope.T
        total *= self.omega
        total[np.diag_indices(self.width)] += self.residual @ weights
        return total

    def traces(self, matrix: np.ndarray) -> np.ndarray:
        """``Tr(Σ_q X)`` for every node q, X symmetric (N, N): from one Hadamard product."""
        diagonal = np.diag(matrix).copy()
        weighted = self.omega * matrix
        return np.einsum("iq,iq->q", weighted @ self.slope, self.slope) + diagonal @ self.residual

    def lower_traces(self, lower: np.ndarray) -> np.ndarray:
        """:meth:`traces` of the symmetric X whose lower triangle is given (upper zero)."""
        diagonal = np.diag(lower).copy()
        weighted = self.omega * lower
        off = 2 * np.einsum("iq,iq->q", weighted @ self.slope, self.slope)
        return off - (self.omega_diagonal * diagonal) @ self.slope**2 + diagonal @ self.residual

    def self_energy_step(self, v: np.ndarray, samples: float, ridge: float):
        regularised = self.covariance_sum(self.f.weights / (1 + v))
        regularised[np.diag_indices(self.width)] += ridge
        resolvent = _spd_inverse_lower(regularised)
        return self.lower_traces(resolvent) / samples, resolvent

    def errors(self, v: np.ndarray, resolvent: np.ndarray, samples: float):
        """(test, train) errors at the fixed point v (Q,), its resolvent's lower triangle."""
        f = self.f
        weights = f.weights / (1 + v)
        squared = f.weights / (1 + v) ** 2
        resolvent = _symmetric_from_lower(resolvent)
        projected = resolvent @ self.low_rank
        core = _low_rank_core(np.concatenate([weights, weights]), self.low_rank.T @ projected)
        mean_inverse = resolvent - projected @ core @ projected.T  # M⁻¹
        rhs = self.means @ (weights * f.target_mean) + self.cross @ (weights * f.target_cross)
        estimate = mean_inverse @ rhs
        along_mean = self.means.T @ estimate
        along_radial = self.radial.T @ estimate
        along_target = self.cross.T @ estimate
        scaled = self.slope * estimate[:, None]
        quadratic = np.einsum("iq,iq->q", scaled, self.omega @ scaled)
        quadratic += self.residual.T @ estimate**2
        bias = (
            f.target_second
            - 2 * along_mean * f.target_mean
            + along_mean**2
            + along_radial**2
            - 2 * along_target * f.target_cross
            + quadratic
        )

        def fluctuation(e: np.ndarray) -> np.ndarray:
            noise = self.covariance_sum(squared * e / samples)
            return self.traces(mean_inverse @ noise @ mean_inverse)

        conditional = solve_fluctuations(fluctuation, bias)
        return float(f.weights @ conditional), float(squared @ conditional)


class _HomogeneousSolver:
    """§3.3 for equal neurons (all r_j = r, c_j = c): one eigendecomposition of Ω."""

    def __init__(self, features: SpikedFeatures, functions: _NodeFunctions):
        self.f = functions
        self.eigenvalues, vectors = symmetric_eigh(features.bulk_gram)
        self.eigenvalues = np.clip(self.eigenvalues, 0.0, None)
        ones = np.ones(len(features.spike))
        # The means span {1, m}: μ_q = μ0(s_q) 1 + μ1(s_q) s_q m.
        self.basis = vectors.T @ np.column_stack([ones, features.bulk_along_spike])
        self.along_target = vectors.T @ features.bulk_along_target
        self.slope_sq = functions.slope[0] ** 2
        self.residual = functions.residual[0]
        self.coefficients = np.column_stack(
            [functions.mean[0], functions.slope[0] * functions.nodes]
        )  # (Q, 2)
        # ν_q = ν(s_q) 1, along the first basis vector.
        self.radial = np.column_stack([functions.radial[0], np.zeros_like(functions.nodes)])

    def self_energy_step(self, v: np.ndarray, samples: float, ridge: float):
        weights = self.f.weights / (1 + v)
        spectrum = ridge + (weights @ self.slope_sq) * self.eigenvalues + weights @ self.residual
        v1 = np.sum(self.eigenvalues / spectrum) / samples
        v2 = np.sum(1 / spectrum) / samples
        return self.slope_sq * v1 + self.residual * v2, spectrum

    def errors(self, v: np.ndarray, spectrum: np.ndarray, samples: float):
        """(test, train) errors at the fixed point v (Q,), its spectrum in Ω's eigenbasis."""
        f = self.f
        weights = f.weights / (1 + v)
        squared = f.weights / (1 + v) ** 2
        d = self.eigenvalues
        inverse = 1 / spectrum
        scaled_basis = self.basis * inverse[:, None]  # Z = S⁻¹P
        mean_weights = (self.coefficients * weights[:, None]).T @ self.coefficients  # A
        mean_weights += (self.radial * weights[:, None]).T @ self.radial
        core = _low_rank_core(mean_weights, self.basis.T @ scaled_basis)

        def apply_inverse(x: np.ndarray) -> np.ndarray:
            return x * inverse - scaled_basis @ (core @ (scaled_basis.T @ x))

        rhs = self.basis @ ((self.coefficients * weights[:, None]).T @ f.target_mean)
        rhs += self.along_target * (weights @ (f.slope[0] * f.target_cross))
        estimate = apply_inverse(rhs)
        along_basis = self.basis.T @ estimate
        along_mean = self.coefficients @ along_basis
        along_radial = self.radial @ along_basis
        along_target = f.slope[0] * (self.along_target @ estimate)
        quadratic = self.slope_sq * (d @ estimate**2) + self.residual * (estimate @ estimate)
        bias = (
            f.target_second
            - 2 * along_mean * f.target_mean
            + along_mean**2
            + along_radial**2
            - 2 * along_target * f.target_cross
            + quadratic
        )

        def trace(x: np.ndarray, y: np.ndarray) -> float:
            """``Tr(X M⁻¹ Y M⁻¹)`` for diagonal X, Y (in Ω's eigenbasis)."""
            first = np.sum(x * y * inverse**2)
            second = np.trace(core @ (scaled_basis.T @ ((x * y * inverse)[:, None] * scaled_basis)))
            zx = scaled_basis.T @ (x[:, None] * scaled_basis)
            zy = scaled_basis.T @ (y[:, None] * scaled_basis)
            return float(first - 2 * second + np.trace(core @ zy @ core @ zx))

        ones = np.ones_like(d)
        t = np.array([[trace(d, d), trace(d, ones)], [trace(d, ones), trace(ones, ones)]])
        # e_q = a_q + (μ1_q², μ2_q²) · T ω / n with ω = Σ_p w̃2_p (μ1_p², μ2_p²) e_p: 2 × 2 in ω.
        loads = np.column_stack([self.slope_sq, self.residual])  # (Q, 2)
        moments = (loads * squared[:, None]).T  # (2, Q)
        omega = np.linalg.solve(np.eye(2) - moments @ loads @ t / samples, moments @ bias)
        conditional = bias + loads @ (t @ omega) / samples
        return float(f.weights @ conditional), float(squared @ conditional)


def _oriented(features: SpikedFeatures, activation: Activation) -> SpikedFeatures:
    """For odd σ, flip the neurons with r_j < 0: ``σ(−r s + c g) = −σ(r s − c g)`` is the same
    feature up to sign, and ridge is invariant under flipping features (D Σ D, D Φ)."""
    flip = features.spike < 0
    if not flip.any() or not _is_odd(activation):
        return features
    signs = np.where(flip, -1.0, 1.0)
    return SpikedFeatures(
        spike=np.abs(features.spike),
        bulk_gram=features.bulk_gram * np.outer(signs, signs),
        bulk_scale=features.bulk_scale,
        bulk_along_spike=features.bulk_along_spike * signs,
        bulk_along_target=features.bulk_along_target * signs,
        cosine=features.cosine,
    )


def is_homogeneous(features: SpikedFeatures) -> bool:
    """Whether every neuron has the same spike r_j and scale c_j (the fast path applies)."""

    def equal(x: np.ndarray) -> bool:
        return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))))

    return equal(features.spike) and equal(features.bulk_scale)


def spiked_errors(
    features: SpikedFeatures,
    activation: Activation,
    target: Target,
    noise: float,
    samples: int | Sequence[int],
    ridges: float | Sequence[float],
    *,
    nodes: int = SPIKE_NODES,
    path: str = "auto",
    accelerate: bool = True,
) -> RidgeCurve:
    """Ridge errors on features Gaussian-equivalent conditionally on the spike (§3.2–3.3).

    Solves the self-energies ``V_q`` (monotone iteration from below, Anderson-accelerated, warm
    started along the ridge path from large λ to small and along n), then the mean part and
    the Q × Q fluctuation system.

    **The shared He₂ part.** Beyond §3.2 each feature keeps the part of its He₂ term that all
    neurons share: ``(h_j² − c_j²)`` projects onto ``u = (‖x⊥‖² − d)/√(2d)`` (one standard
    Gaussian for all neurons, independent of s, z and y), so feature j gets the mean shift
    ``u ν_j(s)`` with ``ν_j(s) = E_g[σ(r_j s + c_j g) He₂(g)] √(κ/2)`` (κ: the layer's
    :attr:`~SpikedFeatures.coherence`, ≈ 1/d), taken out of ``μ2_j(s)²``. On average over pairs
    ``ν_i ν_j`` is level 1's ``½ μ₂² (w_i·w_j)²`` (``random_features_errors``). Each entry is
    O(1/d), but they add up along the mean direction that fits a target's mean: without them
    ``tanh(z1) + 3`` ran 7–8 % low after one step (relu, d = N = 300), and with no spike the
    solver was 9 % below level 1 (N = 200). u enters the fixed point through its two moments
    only (the averages over u = ±1): ``M`` gains ``Σ_q w̃_q ν_q ν_qᵀ`` and each ``e_q`` the
    term ``(ν_qᵀŵ)²``; the self-energies gain no term in u (they move only
    through the smaller ``μ2_j(s)²``).

    Equal neurons (``ones`` preset, the predicted layer; odd σ
    with ``signs``) take the homogeneous path: one eigendecomposition of Ω for every n and λ,
    O(N) per iteration. Otherwise every iteration inverts an N × N matrix (Cholesky).

    Parameters
    ----------
    features : SpikedFeatures
        The layer (from :func:`predicted_features` or :func:`trained_layer_features`).
    activation : Activation
        σ.
    target : Target
        σ*, rank 1.
    noise : float
        Label-noise standard deviation ``σ_ε``.
    samples, ridges : int or sequence
        Ridge-set sizes n (S,) and ridge values λ (L,).
    nodes : int
        Gauss–Hermite nodes Q in the spike coordinate.
    path : {"auto", "homogeneous", "heterogeneous"}
        Force a path (the homogeneous one needs equal neurons).
    accelerate : bool
        Anderson mixing of the self-energy iteration.

    Returns
    -------
    RidgeCurve
        test, train: (S, L).

    Raises
    ------
    ValueError
        For a target of rank > 1, or ``path="homogeneous"`` with unequal neurons.

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.activations import get_activation
    >>> from giantstep.targets import parse_target
    >>> from giantstep.theory.errors import SpikedFeatures, spiked_errors
    >>> rng = np.random.default_rng(0)
    >>> w0 = rng.standard_normal((40, 40))
    >>> w0 /= np.linalg.norm(w0, axis=1, keepdims=True)
    >>> beta = np.eye(40)[0]
    >>> layer = SpikedFeatures.from_layer(w0, np.full(40, 0.5), beta, beta, np.ones(40))
    >>> curve = spiked_errors(layer, get_activation("tanh"), parse_target("tanh(z1)"), 0.0,
    ...                       80, [1e-2, 1e-1])
    >>> bool(np.all(curve.test > curve.train))
    True
    """
    if target.rank != 1:
        raise ValueError(f"the spiked theory needs a rank-1 target, got rank {target.rank}")
    n, lam = _grid(samples, ridges)
    features = _oriented(features, activation)
    homogeneous = is_homogeneous(features)
    if path == "homogeneous" and not homogeneous:
        raise ValueError("the homogeneous path needs equal spikes r_j and scales c_j")
    if path not in ("auto", "homogeneous", "heterogeneous"):
        raise ValueError(f"path must be auto, homogeneous or heterogeneous, got {path!r}")
    homogeneous = homogeneous and path != "heterogeneous"
    functions = _node_functions(features, activation, target, noise, nodes, homogeneous)
    solver = (
        _HomogeneousSolver(features, functions)
        if homogeneous
        else _HeterogeneousSolver(features, functions)
    )
    with threadpool_limits(limits=1, user_api="blas"):
        return _ridge_path(solver, n, lam, len(functions.weights), accelerate)


def _ridge_path(solver, n: np.ndarray, lam: np.ndarray, nodes: int, accelerate: bool) -> RidgeCurve:
    """Every (n, λ) with warm starts: V from the previous λ (descending) and the previous n.

    One BLAS thread (the caller's limit): the solver makes many mid-sized LAPACK calls, which
    on a loaded 2-core machine run up to 10× slower with competing threads (see linalg.py).
    """
    test = np.empty((len(n), len(lam)))
    train = np.empty_like(test)
    order = np.argsort(-lam)  # large λ first: each V starts below the next fixed point
    start = np.zeros(nodes)
    for i, samples_i in enumerate(n):
        row_start = start
        for rank, j in enumerate(order):
            point = solve_fixed_point(
                lambda v, m=samples_i, r=lam[j]: solver.self_energy_step(v, m, r),
                row_start,
                accelerate=accelerate,
            )
            test[i, j], train[i, j] = solver.errors(point.value, point.aux, samples_i)
            row_start = point.value
            if rank == 0:
                start = point.value  # the next n starts from this row's largest λ
    return RidgeCurve(n, lam, test, train)


# --------------------------------------------------------------------------------------------
# The run's entry point
# --------------------------------------------------------------------------------------------


class PredictedRidgeErrors(BaseModel):
    """The theory's errors for one ridge value (same meaning as the run's ``RidgeErrors``)."""

    ridge: float
    test_error: float
    train_error: float


class ErrorVariant(BaseModel):
    """One way of feeding the solver: errors per ridge value, or None with the reason.

    warning: set when the numbers are given but known to be biased in this setting.
    """

    errors: list[PredictedRidgeErrors] | None
    reason: str | None = None
    warning: str | None = None


class PredictedErrors(BaseModel):
    """The three predictions of the ridge errors (see the module docstring).

    random_features: ridge on the initial features F₀ (the run's own prediction when
    ``train.steps = 0``, the random-features baseline otherwise); spiked: the layer predicted
    from the config, W₀, a and β; trained_layer: conditional on the run's trained layer W₁.
    """

    random_features: ErrorVariant
    spiked: ErrorVariant
    trained_layer: ErrorVariant


#: Below this ``n₀/d`` the predicted bulk misses the outliers that ``μ2(σ)μ2(σ*) ≠ 0`` creates.
AMPLIFICATION_BATCH_RATIO = 32
#: Largest rms per-neuron step ``η_j`` in the tested regime (§4).
TESTED_NEURON_STEP = 2.0
#: Largest ``|mean_j η_j · μ2(σ) · E[ỹ]|`` — the step's residual mean, through σ's curvature, in
#: the direction all neurons share — at which ``spiked`` was measured unbiased. Above it the
#: bulk ``W0(I + η μ2 E[ỹ] (X0ᵀX0/n0 − I))`` has a structure the isotropic model misses: in
#: Cui's setting (relu, η_j = 1, n0 = 4d, 16 seeds at d = 300 and 8 at 600) spiked ran
#: −5 … −7 % at 0.24 (tanh(z1) + 1) and +6 … +12 % at 1.04 (tanh(z1) + 3) where trained_layer
#: was within 0 … 2.6 %; at −0.16 (tanh(z1), whose E[ỹ] = −f̄) within 0.5 % of it and at 0.04
#: (tanh(z1) + 0.5) within 0.3 %; with moniri's random-sign a_j (mean η_j ≈ 0) within 0.6 %.
MEAN_AMPLIFICATION = 0.2


def _second_layer_name(config) -> str:
    from giantstep.model import PRESETS

    return config.model.second_layer or PRESETS[config.preset].second_layer


def _input_scope(config) -> str | None:
    """Why no variant applies (the inputs or the labels are not the theory's), or None."""
    if config.data.distribution != "gaussian":
        return (
            f"data.distribution = '{config.data.distribution}': the theory assumes Gaussian "
            "inputs (data.distribution = 'gaussian')"
        )
    if config.target.corruption > 0:
        return (
            f"target.corruption = {config.target.corruption:g}: the theory assumes clean labels "
            "y = σ*(β·x) + ε (target.corruption = 0)"
        )
    return None


def _step_scope(config, teacher) -> str | None:
    """Why neither one-step variant applies, or None."""
    if config.train.mode == "full":
        return (
            "train.mode = 'full': the theory covers one giant step on the first layer "
            "(train.mode = 'steps'); random_features is the initial layer's baseline"
        )
    steps = config.train.steps
    if steps == 0:
        return "train.steps = 0: no giant step was taken, random_features is this run's prediction"
    if steps > 1:
        return f"train.steps = {steps}: the theory covers one giant step (train.steps ≤ 1)"
    if teacher.target.rank != 1:
        return (
            f"target.expression has rank {teacher.target.rank}: the spiked theory covers "
            "single-index targets (z1 only)"
        )
    return None


def one_step_scope(config, teacher) -> str | None:
    """Why the one-step variants (``spiked``, ``trained_layer``) do not apply, or None: the
    inputs or labels are not the theory's, or the run is not one giant step on a
    single-index target. config: ExperimentConfig; teacher: Teacher."""
    return _input_scope(config) or _step_scope(config, teacher)


def _residual_scope(config, initial) -> str | None:
    """Why the predicted (spiked) layer does not apply to this residual, or None."""
    if config.train.residual != "y-f":
        return None
    s, a = initial.output_scale, initial.second_layer
    # The output's fluctuating part is ~ s‖a‖: at most N^-1/2 in mean-field scaling (ones,
    # signs at s = 1/N), of order one for a Gaussian second layer at s = 1.
    size = abs(s) * float(np.linalg.norm(a))
    if size * math.sqrt(initial.width) <= 1 + 1e-9:
        return None
    return (
        f"train.residual = 'y-f' with model.second_layer = '{_second_layer_name(config)}' and "
        f"output scale s = {s:g} (s‖a‖ = {size:.3g} ≫ N^-1/2): the network's own output, of "
        "order one, enters the step; the predicted layer covers train.residual = 'y' here"
    )


def residual_statistics(config, initial, teacher) -> ResidualStatistics:
    """The moments of the residual ``ỹ`` the run's step multiplies (§3.1).

    ``ỹ = y`` for ``train.residual = "y"``; for ``"y-f"``, ``ỹ = y − f̄`` with
    ``f̄ = s Σ_j a_j E σ(w_j·x)`` (valid when the output's fluctuation is negligible, see
    :func:`predict_errors`). config: ExperimentConfig; initial: TwoLayerNetwork; teacher: Teacher.
    """
    offset = 0.0
    if config.train.residual == "y-f":
        constants = neuron_constants(
            initial.activation, np.linalg.norm(initial.first_layer, axis=1)
        )
        # f(x) = s Σ a_j σ(w_j·x) ≈ its mean f̄ (its fluctuation is O(N^-1/2), see _residual_scope).
        offset = initial.output_scale * float(initial.second_layer @ constants.mean)
    return ResidualStatistics.of(teacher.target, teacher.noise, offset)


def _variants(
    curve: Callable[[], RidgeCurve], ridges: list[float], count: int, warning: str | None = None
) -> list[ErrorVariant]:
    """One variant for count ridge-set sizes; a solver failure becomes the reason, not a crash."""
    try:
        result = curve()
    except (RuntimeError, np.linalg.LinAlgError, ValueError) as err:
        return [ErrorVariant(errors=None, reason=f"the theory's solver failed: {err}")] * count
    return [
        ErrorVariant(
            errors=[
                PredictedRidgeErrors(
                    ridge=float(lam),
                    test_error=float(result.test[i, j]),
                    train_error=float(result.train[i, j]),
                )
                for j, lam in enumerate(ridges)
            ],
            warning=warning,
        )
        for i in range(count)
    ]


def _empty(reason: str, count: int) -> list[ErrorVariant]:
    return [ErrorVariant(errors=None, reason=reason)] * count


def _spiked_warning(config, initial, residual: ResidualStatistics, neuron_steps) -> str | None:
    warnings = []
    curvature = neuron_constants(initial.activation, np.ones(1)).curvature[0]  # μ2(σ)
    amplification = curvature * residual.quadratic
    ratio = config.train.batch_size / config.dim
    if abs(amplification) > ZERO and ratio < AMPLIFICATION_BATCH_RATIO:
        warnings.append(
            f"μ2(σ)μ2(σ*) = {amplification:.3g} ≠ 0 and train.batch_size = {ratio:.3g}·dim < "
            f"{AMPLIFICATION_BATCH_RATIO}·dim: the predicted bulk misses the outliers of "
            "W0(I + ημ2Ĉ), so spiked is biased here (up to ~15 % low at n0 = 2d); read "
            "trained_layer beside it"
        )
    shared = float(np.mean(neuron_steps)) * curvature * residual.mean
    if abs(shared) > MEAN_AMPLIFICATION:
        warnings.append(
            f"the residual's mean E[ỹ] = {residual.mean:.3g} enters every neuron's step alike "
            f"(mean η_j · μ2(σ) · E[ỹ] = {shared:.3g}, above {MEAN_AMPLIFICATION:g}): the "
            "predicted bulk misses the structure of W0(I + ημ2E[ỹ](X0ᵀX0/n0 − I)), and spiked "
            "was measured off by −7 … +12 % there (Cui's setting); read trained_layer beside it"
        )
    step_rms = float(np.sqrt(np.mean(neuron_steps**2)))
    if step_rms > TESTED_NEURON_STEP:
        warnings.append(
            f"the per-neuron step η·s·a_j has rms {step_rms:.3g} > {TESTED_NEURON_STEP:g} "
            "(train.step_size): beyond the tested regime of the one-step theory"
        )
    return "; ".join(warnings) or None


def _predicted_layer(config, initial, teacher) -> SpikedFeatures:
    """The layer the config's step is predicted to give (§3.1; the ``spiked`` variant)."""
    from giantstep.data import SPIKE_DIRECTION, generator

    return predicted_features(
        initial.first_layer,
        config.step_size() * initial.output_scale * initial.second_layer,
        initial.activation,
        residual_statistics(config, initial, teacher),
        config.train.batch_size,
        teacher.directions[0],
        generator(config.seed, SPIKE_DIRECTION),
    )


def _spiked(config, initial, teacher, samples, ridges) -> list[ErrorVariant]:
    reason = _residual_scope(config, initial)
    if reason is not None:
        return _empty(reason, len(samples))
    residual = residual_statistics(config, initial, teacher)
    neuron_steps = config.step_size() * initial.output_scale * initial.second_layer

    def curve() -> RidgeCurve:
        layer = _predicted_layer(config, initial, teacher)
        return spiked_errors(
            layer, initial.activation, teacher.target, teacher.noise, samples, ridges
        )

    warning = _spiked_warning(config, initial, residual, neuron_steps)
    return _variants(curve, ridges, len(samples), warning)


def full_solver_variants(config, initial, teacher, trained=None) -> list[str]:
    """The one-step variants of a config that take the N × N solver, in :data:`VARIANTS` order.

    Unequal neurons — ``spiked`` with moniri's ``r_j ∝ a_j``, ``trained_layer`` for any actual
    W₁ — cost one N × N Cholesky inverse per self-energy iteration and two N × N products per
    Krylov dimension of the fluctuation system: about 0.5 s per (n, λ) at N = 1000 on one
    core, against milliseconds on the homogeneous path. Variants out of scope are not listed.
    config: ExperimentConfig; initial, trained: TwoLayerNetwork (trained None: no
    trained_layer); teacher: Teacher.
    """
    if one_step_scope(config, teacher) is not None:
        return []
    found = []
    sigma = initial.activation
    if _residual_scope(config, initial) is None:
        if not is_homogeneous(_oriented(_predicted_layer(config, initial, teacher), sigma)):
            found.append("spiked")
    if trained is not None:
        layer = trained_layer_features(
            initial.first_layer, trained.first_layer, teacher.directions[0]
        )
        if not is_homogeneous(_oriented(layer, sigma)):
            found.append("trained_layer")
    return found


def _trained_layer(initial, teacher, trained, samples, ridges) -> list[ErrorVariant]:
    if trained is None:
        return _empty(
            "no trained network was given (trained=None): trained_layer is conditional on the "
            "run's W1",
            len(samples),
        )

    def curve() -> RidgeCurve:
        layer = trained_layer_features(
            initial.first_layer, trained.first_layer, teacher.directions[0]
        )
        return spiked_errors(
            layer, initial.activation, teacher.target, teacher.noise, samples, ridges
        )

    return _variants(curve, ridges, len(samples))


#: The three variants of the prediction, in the order of :class:`PredictedErrors`.
VARIANTS = ("random_features", "spiked", "trained_layer")


def predict_learning_curve(
    config,
    initial,
    teacher,
    samples: Sequence[int],
    trained=None,
    *,
    variants: Collection[str] = VARIANTS,
) -> list[PredictedErrors]:
    """:func:`predict_errors` for several ridge-set sizes n, reusing every decomposition.

    Parameters
    ----------
    config : ExperimentConfig
        The run's config (its ``readout.samples`` is replaced by each of ``samples``).
    initial : TwoLayerNetwork
        The network at initialisation: W₀ (N, d), a (N,), s, σ.
    teacher : Teacher
        Target, directions W* (r, d), noise.
    samples : sequence of int
        Ridge-set sizes n (S,).
    trained : TwoLayerNetwork or None
        The network after the step (None: no trained_layer variant).
    variants : collection of str
        The variants to compute (of :data:`VARIANTS`); the others are None with the reason
        "not computed: …". ``trained_layer`` and, for unequal neurons, ``spiked`` cost an N × N
        inverse per solver iteration: leave them out for a fast curve.

    Returns
    -------
    list of PredictedErrors
        One per entry of samples, in order.

    Raises
    ------
    ValueError
        For a name in variants that is not one of :data:`VARIANTS`.

    Examples
    --------
    >>> from giantstep.config import validate_config
    >>> from giantstep.experiment import build
    >>> from giantstep.theory.errors import predict_learning_curve
    >>> config = validate_config({"dim": 60, "width": 60, "train": {"steps": 0}})
    >>> initial, teacher = build(config)
    >>> curve = predict_learning_curve(config, initial, teacher, [60, 120, 240])
    >>> [len(point.random_features.errors) for point in curve]
    [3, 3, 3]
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants: unknown {unknown[0]!r}; one of {', '.join(VARIANTS)}")
    ridges = [float(lam) for lam in config.readout.ridge]
    samples = [int(n) for n in samples]
    count = len(samples)
    reason = _input_scope(config)
    if reason is not None:
        empty = ErrorVariant(errors=None, reason=reason)
        return [PredictedErrors(random_features=empty, spiked=empty, trained_layer=empty)] * count
    skipped = _empty("not computed: not among the variants asked for", count)
    random_features = (
        skipped
        if "random_features" not in variants
        else _variants(
            lambda: random_features_errors(
                initial.first_layer,
                initial.activation,
                teacher.target,
                teacher.directions,
                teacher.noise,
                samples,
                ridges,
            ),
            ridges,
            count,
        )
    )
    scope = _step_scope(config, teacher)
    if scope is not None:
        spiked = trained_layer = _empty(scope, count)
    else:
        # The two one-step variants are independent: each in a thread of its own, on one BLAS
        # thread each (the limit is process-wide, so it is set once around both). numpy's
        # products release the GIL: the built-in default's two took 4.7 s one after the other
        # and 3.3 s side by side on an idle 2-core machine, the same either way on a busy one.
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(2) as pool:
            spiked_job = (
                pool.submit(_spiked, config, initial, teacher, samples, ridges)
                if "spiked" in variants
                else None
            )
            trained_job = (
                pool.submit(_trained_layer, initial, teacher, trained, samples, ridges)
                if "trained_layer" in variants
                else None
            )
            spiked = spiked_job.result() if spiked_job else skipped
            trained_layer = trained_job.result() if trained_job else skipped
    return [
        PredictedErrors(random_features=r, spiked=s, trained_layer=t)
        for r, s, t in zip(random_features, spiked, trained_layer, strict=True)
    ]


def predict_errors(config, initial, teacher, trained=None) -> PredictedErrors:
    """The predicted ridge errors of one run, per ridge value, in three variants.

    Parameters
    ----------
    config : ExperimentConfig
        Reads train.steps, train.batch_size, train.residual, train.step_size (via
        ``config.step_size()``), readout.samples, readout.ridge, data.distribution,
        target.noise, preset and model overrides, dim, width, seed.
    initial : TwoLayerNetwork
        The network at initialisation: first_layer W₀ (N, d), second_layer a (N,),
        output_scale s, activation σ.
    teacher : Teacher
        target σ*, directions W* (r, d), noise σ_ε.
    trained : TwoLayerNetwork or None
        The network after the step; None leaves trained_layer empty, with a reason.

    Returns
    -------
    PredictedErrors
        random_features, spiked, trained_layer: each errors (one per ridge value, in the order
        of readout.ridge) or None with a one-sentence reason naming the config key; spiked
        may carry a warning.

    Examples
    --------
    >>> from giantstep.config import validate_config
    >>> from giantstep.experiment import build
    >>> from giantstep.theory.errors import predict_errors
    >>> config = validate_config({"dim": 60, "width": 60, "train": {"residual": "y",
    ...                           "batch_size": 240}, "readout": {"samples": 240}})
    >>> initial, teacher = build(config)
    >>> predicted = predict_errors(config, initial, teacher)
    >>> len(predicted.spiked.errors), predicted.trained_layer.errors is None
    (3, True)
    """
    return predict_learning_curve(config, initial, teacher, [config.readout.samples], trained)[0]
