"""Spectrum of the features after a giant step, streamed: never holding ``F`` (n × N).

Everything is a sum over blocks of rows of the ridge set ``X̃``: ``FᵀF``, ``F_0ᵀF_0``, the
probes' cross products ``Fᵀp`` (``p`` the all-ones vector, polynomial features ``He_k(X̃β)``,
``He_k(X̃ζ̂)``, ``(X̃ζ)^{∘k}``, the network's direction ``X̃W_0ᵀa``), the rank-one terms of the
spiked approximation ``F_ℓ`` and ``(F − F_ℓ)ᵀ(F − F_ℓ)``. Singular values and right vectors of
``F/sqrt(n)`` come from ``eigh(FᵀF/n)``; a left vector ``u = F v/(s sqrt(n))`` has
``cos(u, p) = pᵀF v / (s sqrt(n) ‖p‖)``, so alignments need only ``Fᵀp``.

**Learned spikes** (the rule, SCIENCE.md §3 [M]). Let ``e_0`` be the bulk edge of ``F_0``: its
largest singular value once its mean spike is set aside. The step moves the whole bulk of ``F``
a little (its top edge sits a few per cent above ``e_0`` at ``α = 0.3``), so "above ``e_0``" alone
counts bulk values. An **outlier** is a value separated from everything below it by a gap much
larger than the bulk's own spacing: with ``r_1 ≥ r_2 ≥ …`` the values of ``F`` without its mean
spike, the learned spikes are ``r_1 .. r_J`` where ``J`` is the largest ``j`` with ``r_j > e_0`` and
``r_j − r_{j+1} > GAP_FACTOR · median(r_{i} − r_{i+1}, i = j+1 .. j+SPACING_WINDOW)``. Near a
random-matrix edge consecutive gaps differ by a factor of a few (Tracy–Widom), never by
``GAP_FACTOR``; an outlier's gap grows like ``sqrt(n)`` times the spacing. Each spike is then named
by the probe its left vector is best aligned with: ``degree k`` (``He_k(X̃ζ̂)``, the target's
spikes) or ``network`` (``X̃W_0ᵀa``, the outliers the network's own output adds with residual
``y − f``), or ``unexplained`` when no probe reaches a squared cosine of ``EXPLAINED_ALIGNMENT``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from pydantic import BaseModel

from giantstep import kernels
from giantstep.activations import Activation
from giantstep.data import RIDGE, TEST, TRAIN, Block, SampleStream
from giantstep.hermite import MAX_DEGREE as HERMITE_MAX_DEGREE
from giantstep.hermite import hermite
from giantstep.linalg import symmetric_eigh
from giantstep.model import TwoLayerNetwork
from giantstep.readout import GramStatistics, ridge_path
from giantstep.reduction import reduce_blocks
from giantstep.targets import Teacher
from giantstep.theory.bands import (
    UpdateTriplet,
    band_index,
    predicted_spikes,
    spike_terms,
    update_triplet,
)
from giantstep.train import check_finite

#: An outlier's gap to the next value must exceed this many times the bulk's local spacing.
GAP_FACTOR = 8.0
#: Number of gaps below a candidate whose median is the bulk's local spacing.
SPACING_WINDOW = 10
#: The mean spike's left vector has at least this squared cosine with the all-ones vector.
MEAN_ALIGNMENT = 0.5
#: A spike whose best squared cosine with a candidate probe is below this is "unexplained".
EXPLAINED_ALIGNMENT = 0.2

Progress = Callable[[int], object] | None


@dataclass(frozen=True)
class Probes:
    """The probe vectors ``p`` on the rows of a block, and their names.

    beta: (d,) the target direction; zeta: (d,) ``Xᵀy/n`` of the first gradient batch, or None;
    network_direction: (d,) ``W_0ᵀa``; max_degree: K.
    """

    beta: np.ndarray
    zeta: np.ndarray | None
    network_direction: np.ndarray
    max_degree: int

    @property
    def names(self) -> list[str]:
        """The probes' names, in the order of their columns."""
        k = range(1, self.max_degree + 1)
        names = ["1", *(f"He{j}(X̃β)" for j in k)]
        if self.zeta is not None:
            names += [f"He{j}(X̃ζ̂)" for j in k] + [f"(X̃ζ)^{j}" for j in k]
        return [*names, "X̃W0ᵀa"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(rows, P) probe values on rows x (rows, d), float64."""
        columns = [np.ones(len(x))]
        along = (x @ self.beta.astype(x.dtype)).astype(np.float64)
        columns += [hermite(j, along) for j in range(1, self.max_degree + 1)]
        if self.zeta is not None:
            z = (x @ self.zeta.astype(x.dtype)).astype(np.float64)
            unit = z / np.linalg.norm(self.zeta)
            columns += [hermite(j, unit) for j in range(1, self.max_degree + 1)]
            columns += [z**j for j in range(1, self.max_degree + 1)]
        columns.append((x @ self.network_direction.astype(x.dtype)).astype(np.float64))
        return np.stack(columns, axis=1)

    def index(self, name: str) -> int:
        """The column of the probe named ``name``."""
        return self.names.index(name)


@dataclass
class FeatureSums:
    """Sums over ``count`` rows of ``F`` (after the steps), ``F_0`` (initial weights), probes
    ``P`` (rows, P), labels ``y`` and the spike terms ``T`` (rows, K) of ``F_ℓ = F_0 + T_ℓ U_ℓᵀ``.

    gram, gram0: (N, N) ``FᵀF``, ``F_0ᵀF_0``; cross, cross0: (N,) ``Fᵀy``, ``F_0ᵀy``;
    probe_cross, probe_cross0: (N, P) ``FᵀP``, ``F_0ᵀP``; probe_gram: (P, P); probe_y: (P,);
    term_cross0: (N, K) ``F_0ᵀT``; term_gram: (K, K); term_y: (K,); term_probe: (K, P);
    powers: (N, K) ``U``; residual_grams: (K, N, N) ``(F − F_ℓ)ᵀ(F − F_ℓ)``, ℓ = 1..K, or None.
    """

    count: int
    sum_sq: float
    gram: np.ndarray
    cross: np.ndarray
    probe_cross: np.ndarray
    gram0: np.ndarray
    cross0: np.ndarray
    probe_cross0: np.ndarray
    probe_gram: np.ndarray
    probe_y: np.ndarray
    term_cross0: np.ndarray
    term_gram: np.ndarray
    term_y: np.ndarray
    term_probe: np.ndarray
    powers: np.ndarray
    residual_grams: np.ndarray | None = field(default=None)

    def statistics(self, which: str | int = "F") -> GramStatistics:
        """Ridge statistics of ``"F"``, ``"F0"`` or ``F_ℓ`` (``which = ℓ``, assembled exactly)."""
        if which == "F":
            return GramStatistics(self.gram, self.cross, self.sum_sq, self.count)
        if which == "F0":
            return GramStatistics(self.gram0, self.cross0, self.sum_sq, self.count)
        gram, cross, _ = self._approximation(int(which))
        return GramStatistics(gram, cross, self.sum_sq, self.count)

    def probe_products(self, which: str | int = "F") -> np.ndarray:
        """(N, P) ``FᵀP`` for ``"F"``, ``"F0"`` or ``F_ℓ``."""
        if which == "F":
            return self.probe_cross
        if which == "F0":
            return self.probe_cross0
        return self._approximation(int(which))[2]

    def _approximation(self, ell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``F_ℓᵀF_ℓ``, ``F_ℓᵀy``, ``F_ℓᵀP`` from ``F_ℓ = F_0 + T_ℓ U_ℓᵀ``."""
        if not 0 <= ell <= self.powers.shape[1]:
            raise ValueError(f"ℓ = {ell} outside 0..{self.powers.shape[1]}")
        u = self.powers[:, :ell]
        cross_terms = self.term_cross0[:, :ell] @ u.T
        gram = self.gram0 + cross_terms + cross_terms.T + u @ self.term_gram[:ell, :ell] @ u.T
        cross = self.cross0 + u @ self.term_y[:ell]
        probe = self.probe_cross0 + u @ self.term_probe[:ell]
        return gram, cross, probe

    def __add__(self, other: FeatureSums) -> FeatureSums:
        """The sums over the rows of both (the spike powers ``U`` are the same in both)."""
        added = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name not in ("powers", "residual_grams")
        }
        residual = None
        if self.residual_grams is not None:
            residual = self.residual_grams + other.residual_grams
        return FeatureSums(**added, powers=self.powers, residual_grams=residual)


@dataclass(frozen=True)
class SpectrumSum:
    """The :class:`FeatureSums` of a set of rows, block by block (a :class:`StreamedSum`).

    weights, weights0: (d, N) ``Wᵀ`` after the steps and at initialisation, in the blocks'
    dtype. triplet and mu (``μ_0..μ_K``) define the spike terms of ``F_ℓ`` (none without a
    triplet); residual_grams adds ``(F − F_ℓ)ᵀ(F − F_ℓ)`` for ℓ = 1..K (one N × N product each).
    """

    name = "spectrum"
    weights: np.ndarray
    weights0: np.ndarray
    activation: Activation
    teacher: Teacher
    probes: Probes
    triplet: UpdateTriplet | None = None
    mu: np.ndarray | None = None
    residual_grams: bool = False

    @property
    def max_degree(self) -> int:
        """K of the spike terms of ``F_ℓ`` (0 without an update triplet)."""
        return self.probes.max_degree if self.triplet is not None else 0

    def zero(self) -> FeatureSums:
        """The sums of no rows."""
        width, degree, n_probes = self.weights.shape[1], self.max_degree, len(self.probes.names)
        z = np.zeros
        powers = (
            self.triplet.left[:, None] ** np.arange(1, degree + 1)[None, :]
            if degree
            else z((width, 0))
        )
        return FeatureSums(
            0, 0.0, z((width, width)), z(width), z((width, n_probes)),
            z((width, width)), z(width), z((width, n_probes)), z((n_probes, n_probes)),
            z(n_probes), z((width, degree)), z((degree, degree)), z(degree),
            z((degree, n_probes)), powers,
            z((degree, width, width)) if self.residual_grams and degree else None,
        )  # fmt: skip

    def add(self, sums: FeatureSums, block: Block) -> FeatureSums:
        """Add one block of rows to every sum."""
        _, y = self.teacher.labels(block)
        y = y.astype(np.float64)
        features = kernels.values(self.activation, block.x @ self.weights)
        features0 = kernels.values(self.activation, block.x @ self.weights0)
        p = self.probes(block.x)
        sums.count += len(y)
        sums.sum_sq += float(y @ y)
        sums.gram += features.T @ features
        sums.cross += features.T @ y
        sums.probe_cross += features.T @ p
        sums.gram0 += features0.T @ features0
        sums.cross0 += features0.T @ y
        sums.probe_cross0 += features0.T @ p
        sums.probe_gram += p.T @ p
        sums.probe_y += p.T @ y
        if self.max_degree:
            terms, powers = spike_terms(block.x, self.triplet, self.mu, self.max_degree)
            sums.term_cross0 += features0.T @ terms
            sums.term_gram += terms.T @ terms
            sums.term_y += terms.T @ y
            sums.term_probe += terms.T @ p
            if sums.residual_grams is not None:
                # F − F_ℓ, peeling one term at a time; exact, no cancellation between Grams.
                residual = features - features0
                for ell in range(self.max_degree):
                    residual -= np.outer(terms[:, ell], powers[:, ell]).astype(residual.dtype)
                    sums.residual_grams[ell] += residual.T @ residual
        return sums


def feature_sums(
    network: TwoLayerNetwork,
    initial: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream,
    *,
    n_samples: int,
    block_size: int,
    probes: Probes,
    triplet: UpdateTriplet | None = None,
    mu: np.ndarray | None = None,
    residual_grams: bool = False,
    executor: Any = None,
    progress: Progress = None,
) -> FeatureSums:
    """Stream rows ``0 .. n_samples`` of ``stream`` once and accumulate :class:`FeatureSums`.

    Parameters
    ----------
    network, initial : TwoLayerNetwork
        After the steps (features F) and at initialisation (F_0).
    teacher : Teacher
        Labels the rows.
    stream : SampleStream
        The ridge or test set.
    n_samples, block_size : int
        Rows summed and rows per block.
    probes : Probes
        The probe vectors P.
    triplet : UpdateTriplet, optional
        Top singular triplet of the update; with ``mu`` (μ_0..μ_K) it defines the spike terms
        of ``F_ℓ`` (none without it).
    mu : numpy.ndarray, optional
        (K + 1,) Hermite coefficients of σ.
    residual_grams : bool
        Also sum ``(F − F_ℓ)ᵀ(F − F_ℓ)``, ℓ = 1..K.
    executor : None or distributed.Client
        Where the blocks are summed (see :func:`giantstep.reduction.reduce_blocks`).
    progress : callable, optional
        Called with the number of blocks done.

    Returns
    -------
    FeatureSums

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.activations import get_activation
    >>> from giantstep.data import RIDGE, SampleStream
    >>> from giantstep.model import initialize
    >>> from giantstep.targets import Teacher
    >>> initial = initialize(0, 6, 4, activation=get_activation("tanh"))
    >>> teacher = Teacher.draw(0, "z1", 4)
    >>> probes = Probes(teacher.directions[0], None, np.ones(4), max_degree=2)
    >>> sums = feature_sums(initial, initial, teacher, SampleStream(0, (RIDGE, 0), 4),
    ...                     n_samples=512, block_size=256, probes=probes)
    >>> sums.gram.shape, sums.probe_cross.shape, np.allclose(sums.gram, sums.gram0)
    ((6, 6), (6, 4), True)
    """
    summand = SpectrumSum(
        network.first_layer.T.astype(stream.dtype),
        initial.first_layer.T.astype(stream.dtype),
        network.activation,
        teacher,
        probes,
        triplet,
        mu,
        residual_grams,
    )
    return reduce_blocks(
        summand, stream, n_samples, block_size, executor=executor, progress=progress
    )


@dataclass(frozen=True)
class TopSpectrum:
    """Top singular values of ``F/sqrt(n)`` (descending), right vectors (N, k) and the squared
    cosines (k, P) of the left vectors with each probe."""

    values: np.ndarray
    right: np.ndarray
    cos2: np.ndarray


def top_spectrum(
    gram: np.ndarray, probe_cross: np.ndarray, probe_gram: np.ndarray, count: int, top: int
) -> TopSpectrum:
    """The ``top`` largest singular values of ``F/sqrt(n)`` from ``FᵀF`` (N, N) and ``FᵀP``."""
    size = gram.shape[0]
    top = min(top, size)
    eigenvalues, vectors = symmetric_eigh(gram / count, (size - top, size - 1))
    order = np.argsort(eigenvalues)[::-1]
    values = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
    vectors = vectors[:, order]
    norms = np.sqrt(np.diag(probe_gram))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (vectors.T @ probe_cross) / (values[:, None] * math.sqrt(count) * norms[None, :])
    return TopSpectrum(values, vectors, np.nan_to_num(cos**2))


def operator_norm(gram: np.ndarray, count: int) -> float:
    """``‖M‖_op / sqrt(n)`` from ``MᵀM`` (N, N)."""
    size = gram.shape[0]
    top, _ = symmetric_eigh(gram / count, (size - 1, size - 1))
    return math.sqrt(max(float(top[0]), 0.0))


def mean_spike_index(spectrum: TopSpectrum, mean_coefficient: float) -> int | None:
    """The index of the mean spike (left vector aligned with 1), None when ``μ_0(σ) = 0``."""
    if abs(mean_coefficient) < 1e-9:
        return None
    best = int(np.argmax(spectrum.cos2[:, 0]))
    return best if spectrum.cos2[best, 0] >= MEAN_ALIGNMENT else None


def count_outliers(values: np.ndarray, edge: float) -> int:
    """Values (descending, mean spike removed) separated from the bulk: the rule of the module."""
    count = 0
    for j in range(len(values) - SPACING_WINDOW - 1):
        if values[j] <= edge:
            break
        below = np.diff(values[j + 1 : j + 2 + SPACING_WINDOW])
        spacing = float(np.median(-below))
        if values[j] - values[j + 1] > GAP_FACTOR * spacing:
            count = j + 1
    return count


class SpikeAlignment(BaseModel):
    """One learned spike: its singular value, squared cosines of its left vector with each
    probe, and what it is (``degree k`` of the target, ``network`` along ``X̃W_0ᵀa``)."""

    value: float
    kind: str
    cos2: dict[str, float]


class ApproximationErrors(BaseModel):
    """Ridge errors on ``F_ℓ`` (``ell = 0`` is ``F_0``) for one ridge value, beside ``F``'s."""

    ell: int
    ridge: float
    train_error: float
    test_error: float


class SpectrumResult(BaseModel):
    """The spectrum of ``F/sqrt(n)`` on the ridge set beside its prediction (SCIENCE.md §3 [M]).

    singular_values, initial_singular_values: top values of ``F/sqrt(n)``, ``F_0/sqrt(n)``
    (mean spike included). bulk_edge: ``e_0``. spikes: count of learned spikes (mean spike
    excluded); target_spikes / network_spikes: how many of them are the target's / along
    ``X̃W_0ᵀa`` (the rest are unexplained). mean_spike: its value (None if ``μ_0(σ) = 0``),
    mean_spike_cos2 its alignment with 1. predicted_spikes: the band rule at ``α`` (None
    unless one step with ``0 ≤ α < 1/2``, and None with ``band`` set when band ``ℓ`` needs
    ``μ_k`` that are not computed exactly here: k above 128, or lost in rounding).
    approximation_error: ``‖F − F_ℓ‖_op/sqrt(n)`` for ℓ = 1..K; approximation_singular_values:
    top values of ``F_ℓ/sqrt(n)`` for ℓ = 1..K. approximation_ridge_errors: ridge errors on
    ``F_ℓ``, ℓ = 0..K (0 is ``F_0``), fitted and tested on ``F_ℓ`` of the ridge and test sets.
    projections: per ridge value, ``E[f̂(x) He_k(⟨β,x⟩)]`` (k = 1..K) on the test set;
    target_projections: the target's own ``E[σ*(z) He_k(z)]``.
    """

    singular_values: list[float]
    initial_singular_values: list[float]
    bulk_edge: float
    spikes: int
    target_spikes: int
    network_spikes: int
    mean_spike: float | None
    mean_spike_cos2: float | None
    spike_alignment: list[SpikeAlignment]
    predicted_spikes: int | None
    band: int | None
    on_band_boundary: bool | None
    update_singular_value: float
    approximation_error: list[float] | None
    approximation_singular_values: list[list[float]] | None
    approximation_ridge_errors: list[ApproximationErrors] = []
    projections: list[list[float]] = []
    target_projections: list[float] | None = None


def classify(cos2: np.ndarray, names: list[str], max_degree: int) -> str:
    """``degree k`` or ``network``: the candidate probe the left vector is best aligned with,
    or ``unexplained`` when even that squared cosine is below ``EXPLAINED_ALIGNMENT``."""
    candidates = [f"He{k}(X̃ζ̂)" for k in range(1, max_degree + 1)]
    if candidates[0] not in names:
        candidates = [f"He{k}(X̃β)" for k in range(1, max_degree + 1)]
    candidates.append("X̃W0ᵀa")
    scores = [cos2[names.index(c)] for c in candidates]
    best = int(np.argmax(scores))
    if scores[best] < EXPLAINED_ALIGNMENT:
        return "unexplained"
    return "network" if best == len(candidates) - 1 else f"degree {best + 1}"


def analyse(
    sums: FeatureSums,
    names: list[str],
    mean_coefficient: float,
    top: int,
    max_degree: int,
    predicted: tuple[int, int, bool] | None,
    update_singular_value: float,
) -> SpectrumResult:
    """The :class:`SpectrumResult` of streamed sums (``predicted = (spikes, ℓ, on_boundary)``)."""
    depth = top + SPACING_WINDOW + 2
    after = top_spectrum(sums.gram, sums.probe_cross, sums.probe_gram, sums.count, depth)
    before = top_spectrum(sums.gram0, sums.probe_cross0, sums.probe_gram, sums.count, depth)
    mean_after = mean_spike_index(after, mean_coefficient)
    mean_before = mean_spike_index(before, mean_coefficient)
    edge = float(np.delete(before.values, [] if mean_before is None else [mean_before])[0])
    keep = [i for i in range(len(after.values)) if i != mean_after]
    values = after.values[keep]
    spikes = count_outliers(values, edge)
    alignment = [
        SpikeAlignment(
            value=float(after.values[i]),
            kind=classify(after.cos2[i], names, max_degree),
            cos2={name: float(c) for name, c in zip(names, after.cos2[i], strict=True)},
        )
        for i in keep[:spikes]
    ]
    approx_error = approx_values = None
    if sums.residual_grams is not None:
        approx_error = [operator_norm(g, sums.count) for g in sums.residual_grams]
        approx_values = []
        for ell in range(1, sums.powers.shape[1] + 1):
            gram, _, probe = sums._approximation(ell)
            s = top_spectrum(gram, probe, sums.probe_gram, sums.count, top)
            approx_values.append(s.values.tolist())
    network = sum(a.kind == "network" for a in alignment)
    target = sum(a.kind.startswith("degree") for a in alignment)
    return SpectrumResult(
        singular_values=after.values[:top].tolist(),
        initial_singular_values=before.values[:top].tolist(),
        bulk_edge=edge,
        spikes=spikes,
        target_spikes=target,
        network_spikes=network,
        mean_spike=None if mean_after is None else float(after.values[mean_after]),
        mean_spike_cos2=None if mean_after is None else float(after.cos2[mean_after, 0]),
        spike_alignment=alignment,
        predicted_spikes=None if predicted is None else predicted[0],
        band=None if predicted is None else predicted[1],
        on_band_boundary=None if predicted is None else predicted[2],
        update_singular_value=update_singular_value,
        approximation_error=approx_error,
        approximation_singular_values=approx_values,
    )


@dataclass(frozen=True)
class ZetaSum:
    """``Xᵀy`` (d,) of a set of rows, block by block (a :class:`StreamedSum`)."""

    name = "zeta"
    teacher: Teacher
    dim: int

    def zero(self) -> np.ndarray:
        """(d,) zeros."""
        return np.zeros(self.dim)

    def add(self, total: np.ndarray, block: Block) -> np.ndarray:
        """Add the block's ``Xᵀy``."""
        _, y = self.teacher.labels(block)
        total += block.x.T @ y
        return total


def first_batch_zeta(
    teacher: Teacher,
    stream: SampleStream,
    *,
    n_samples: int,
    block_size: int,
    executor: Any = None,
) -> np.ndarray:
    """``ζ = Xᵀy/n`` (d,) of a gradient batch, streamed (``executor`` as in ``reduce_blocks``).

    Examples
    --------
    >>> import numpy as np
    >>> from giantstep.data import TRAIN, SampleStream
    >>> from giantstep.targets import Teacher
    >>> teacher = Teacher.draw(0, "z1", 50)
    >>> zeta = first_batch_zeta(teacher, SampleStream(0, (TRAIN, 0), 50),
    ...                         n_samples=20000, block_size=4096)
    >>> bool(abs(zeta @ teacher.directions[0] - 1) < 0.05)  # E[x y] = β for y = ⟨β, x⟩
    True
    """
    total = reduce_blocks(
        ZetaSum(teacher, stream.dim), stream, n_samples, block_size, executor=executor
    )
    return total / n_samples


@dataclass(frozen=True)
class LeftVectorsSum:
    """The rows ``F v_i · scale_i`` of every row of a set, each block writing its own rows.

    A sum of (n, k) arrays that are zero outside their rows (so pieces add up exactly).
    weights: (d, N) ``Wᵀ`` in the blocks' dtype; right: (N, k); scale: (k,).
    """

    name = "left vectors"
    weights: np.ndarray
    activation: Activation
    right: np.ndarray
    scale: np.ndarray
    n_samples: int

    def zero(self) -> np.ndarray:
        """(n, k) zeros."""
        return np.zeros((self.n_samples, self.right.shape[1]))

    def add(self, total: np.ndarray, block: Block) -> np.ndarray:
        """Write the block's rows of ``F V · scale``."""
        rows = slice(block.start, block.start + len(block.x))
        features = kernels.values(self.activation, block.x @ self.weights)
        total[rows] = (features @ self.right) * self.scale
        return total


def left_vectors(
    network: TwoLayerNetwork,
    stream: SampleStream,
    *,
    n_samples: int,
    block_size: int,
    spectrum: TopSpectrum,
    count: int,
    executor: Any = None,
) -> np.ndarray:
    """Left singular vectors ``u_i = F v_i / (s_i sqrt(n))`` on the rows: (n, k).

    A second pass over the rows; it holds an (n, k) array, so use it for a small n.
    """
    summand = LeftVectorsSum(
        network.first_layer.T.astype(stream.dtype),
        network.activation,
        spectrum.right,
        1.0 / (spectrum.values * math.sqrt(count)),
        n_samples,
    )
    return reduce_blocks(summand, stream, n_samples, block_size, executor=executor)


@dataclass
class SpectrumMeasurement:
    """The result, plus the sums of the ridge and test sets (for the readout and the reports)."""

    result: SpectrumResult
    ridge: FeatureSums
    test: FeatureSums
    probes: Probes


def target_coefficients(teacher: Teacher, max_degree: int) -> list[float] | None:
    """``E[σ*(z) He_k(z)]``, k = 1..K, of a single-index target (None for rank > 1)."""
    if teacher.target.rank != 1:
        return None
    return [
        teacher.target.expectation(lambda h, k=k: hermite(k, h[:, 0]))
        for k in range(1, max_degree + 1)
    ]


def measure(
    config,
    initial: TwoLayerNetwork,
    network: TwoLayerNetwork,
    teacher: Teacher,
    *,
    step_size: float,
    executor: Any = None,
    progress: Progress = None,
) -> SpectrumMeasurement:
    """Stream the ridge and test sets once each and measure the spectrum of a run's features.

    config: the run's ExperimentConfig (``spectrum`` section). ``ζ`` is that of the first
    gradient batch (a third, cheap pass: ``Xᵀy`` only); the spike terms of ``F_ℓ`` come from
    the top singular triplet of the actual update ``W_T − W_0``. Every pass goes through
    ``executor`` (see :func:`giantstep.reduction.reduce_blocks`).
    """
    spec, c = config.spectrum, config.compute
    max_degree = spec.max_degree
    mu = network.activation.hermite_coefficients(max_degree)
    update = network.first_layer - initial.first_layer
    triplet = update_triplet(update) if np.any(update) else None
    zeta = None
    if config.train.steps:
        zeta = first_batch_zeta(
            teacher,
            config.stream(TRAIN, 0),
            n_samples=config.train.batch_size,
            block_size=c.block_size,
            executor=executor,
        )
    probes = Probes(
        beta=teacher.directions[0],
        zeta=zeta,
        network_direction=initial.first_layer.T @ initial.second_layer,
        max_degree=max_degree,
    )

    approximate = spec.approximation and triplet is not None
    shared = {
        "block_size": c.block_size,
        "probes": probes,
        "triplet": triplet if approximate else None,
        "mu": mu,
        "executor": executor,
        "progress": progress,
    }
    ridge = feature_sums(
        network,
        initial,
        teacher,
        config.stream(RIDGE),
        n_samples=config.readout.samples,
        residual_grams=approximate,
        **shared,
    )
    test = feature_sums(
        network, initial, teacher, config.stream(TEST), n_samples=config.test.samples, **shared
    )
    # A diverged run's features overflow: say so, before the eigensolvers refuse them. The
    # spike terms of the Hermite approximation (powers of the update's scale) overflow first.
    for sums in (ridge, test):
        for gram in (sums.gram, sums.gram0):
            check_finite(gram, network, config.steps_taken(), "the features σ(XWᵀ)")
        approximation = [sums.term_cross0, sums.term_gram, sums.term_y, sums.term_probe]
        if sums.residual_grams is not None:
            approximation.append(sums.residual_grams)
        for terms in approximation:
            check_finite(
                terms,
                network,
                config.train.steps,
                "the spike terms of the Hermite approximation F_ℓ (spectrum.approximation)",
            )
    alpha = config.train.step_size.batch_exponent
    predicted = None
    # The band rule is a statement about one step with η = c·n^α.
    if config.train.steps == 1 and step_size and 0 <= alpha < 0.5:
        predicted = _band_rule(alpha, network.activation)
    result = analyse(
        ridge, probes.names, float(mu[0]), spec.top, max_degree, predicted,
        triplet.value if triplet is not None else 0.0,
    )  # fmt: skip
    result.approximation_ridge_errors = _approximation_errors(
        ridge, test, config.readout.ridge, max_degree if approximate else 0
    )
    result.projections, result.target_projections = _projections(
        ridge, test, probes, config.readout.ridge, teacher, max_degree
    )
    return SpectrumMeasurement(result, ridge, test, probes)


def _band_rule(alpha: float, activation: Activation) -> tuple[int | None, int, bool]:
    """(spikes, ℓ, on_boundary) of the band rule at ``α``; spikes None when band ``ℓ`` needs
    ``μ_k`` past what is computed here — above ``MAX_DEGREE`` (α near 1/2), or lost in
    rounding (tanh: from k = 17, α ≥ 8/17): which of them are zero decides the count."""
    ell, boundary = band_index(alpha)
    if ell > HERMITE_MAX_DEGREE or activation.first_lost_degree(ell) is not None:
        return None, ell, boundary
    mu = activation.hermite_coefficients(ell)
    return predicted_spikes(alpha, mu, activation.hermite_rounding(ell)), ell, boundary


def _approximation_errors(ridge, test, ridges, max_degree) -> list[ApproximationErrors]:
    rows = []
    for ell in range(max_degree + 1):
        which = "F0" if ell == 0 else ell
        train = ridge.statistics(which)
        coefficients = ridge_path(train, ridges)
        tr = train.mean_squared_error(coefficients)
        te = test.statistics(which).mean_squared_error(coefficients)
        rows += [
            ApproximationErrors(ell=ell, ridge=lam, train_error=float(a), test_error=float(b))
            for lam, a, b in zip(ridges, tr, te, strict=True)
        ]
    return rows


def _projections(ridge, test, probes, ridges, teacher, max_degree):
    """``E[f̂(x) He_k(⟨β,x⟩)]`` on the test set, one list (k = 1..K) per ridge value."""
    coefficients = ridge_path(ridge.statistics("F"), ridges)
    columns = [probes.index(f"He{k}(X̃β)") for k in range(1, max_degree + 1)]
    fitted = (test.probe_cross[:, columns].T @ coefficients) / test.count  # (K, L)
    return fitted.T.tolist(), target_coefficients(teacher, max_degree)
