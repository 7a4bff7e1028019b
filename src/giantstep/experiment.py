"""A validated config -> one run -> one result record."""

from __future__ import annotations

import resource
import time
from contextlib import nullcontext
from functools import lru_cache
from importlib.metadata import version
from typing import Any

import numpy as np
import psutil
from pydantic import BaseModel
from tqdm.auto import tqdm

from giantstep.activations import get_activation
from giantstep.alignment import direction_alignment, update_cosine
from giantstep.config import ConfigError, ExperimentConfig, MeasureConfig, validate_config
from giantstep.data import (
    CHUNK_ROWS,
    RIDGE,
    TEST,
    TRAIN,
    SampleStream,
    block_count,
    draw_ahead,
    prefetching,
)
from giantstep.fulltrain import FullTrainingResult, train_fully
from giantstep.linalg import blas_threads_for
from giantstep.model import TwoLayerNetwork, initialize
from giantstep.overlaps import learned_subspace, overlaps, summarize
from giantstep.readout import feature_statistics, ridge_path
from giantstep.reduction import check_executor
from giantstep.spectrum import SpectrumResult
from giantstep.spectrum import measure as measure_spectrum
from giantstep.targets import Teacher
from giantstep.theory.errors import PredictedErrors, predict_errors
from giantstep.theory.spikes import direction_cosine
from giantstep.train import DivergenceError, StepPlan, check_finite, giant_steps


class RidgeErrors(BaseModel):
    """Mean squared errors of the ridge readout for one ridge value.

    Attributes
    ----------
    ridge : float
        ``λ`` of ``(1/n)‖y − F a‖² + λ‖a‖²``.
    train_error : float
        ``(1/n)‖y − F â‖²`` on the ridge set.
    test_error : float
        The same on the fresh test set (includes the label noise ``σ_ε²``).
    """

    ridge: float
    train_error: float
    test_error: float


class StepAlignment(BaseModel):
    """Alignment of the first layer after ``step`` steps (step 0 is the initialisation).

    Attributes
    ----------
    step : int
        Steps taken.
    direction_alignment : list of float
        (r,) ``sqrt(mean_j cos²(w_j, W*_k))`` for each target direction k.
    update_cosine : float or None
        ``|cos|`` of the top right singular vector of ``W_t − W_0`` with ``W*_1`` (None at 0).
    overlap_m_rms, overlap_q_diagonal, overlap_q_offdiagonal
        Summaries of ``M = W W*ᵀ`` and ``Q = W Wᵀ`` (``giantstep.overlaps.summarize``).
    m, q : list or None
        ``M`` (N × r) and ``Q`` (N × N) in full, only with ``measure.overlap_matrices``.
    subspace_eigenvalues : list of float
        (r,) eigenvalues of ``M̂ᵀM̂/N``, descending (about 1/d at random).
    learned : list of list of float
        The directions (rows in target coordinates) whose eigenvalue exceeds
        ``measure.learned_threshold / d``.
    predicted : list of list of float or None
        The predictor's learned subspace after this step (orthonormal rows, same form), for
        ``κ = config.batch_exponent()``; None if the target is beyond the predictor.
    """

    step: int
    direction_alignment: list[float]
    update_cosine: float | None
    overlap_m_rms: list[float] = []
    overlap_q_diagonal: float | None = None
    overlap_q_offdiagonal: float | None = None
    m: list[list[float]] | None = None
    q: list[list[float]] | None = None
    subspace_eigenvalues: list[float] = []
    learned: list[list[float]] = []
    predicted: list[list[float]] | None = None


class RunResult(BaseModel):
    """Everything one run measured, with the theory's prediction beside it where there is one.

    Attributes
    ----------
    config : ExperimentConfig
        The resolved config.
    version : str
        The giantstep version that ran it.
    step_size : float
        ``η``.
    errors : list of RidgeErrors
        One per ridge value, in the config's order.
    alignment : list of StepAlignment
        One per step, step 0 the initialisation.
    predicted_update_cosine : float or None
        ``γ`` of SCIENCE.md §3 (rank-1 targets; describes residual ``y``).
    seconds : float
        Wall time.
    peak_memory_bytes : int
        Peak resident memory of the process running it.
    spectrum : SpectrumResult or None
        With ``spectrum.enabled``.
    predicted_errors : PredictedErrors or None
        With ``theory.errors``: the theory's errors per ridge value in three variants
        (``random_features``, ``spiked``, ``trained_layer``), each null with a reason when out
        of scope (``giantstep.theory.errors``).
    theory_seconds : float or None
        Wall time of ``predicted_errors`` (part of ``seconds``).
    full_training : FullTrainingResult or None
        With ``train.mode = "full"``: the chosen weight decay, the loss curve and the trained
        network's own errors (``alignment`` then has step 0 and step 1, after training, and
        ``errors`` are ridge refitted on the trained features).

    Examples
    --------
    >>> result = run({"dim": 30, "width": 20, "train": {"batch_size": 512},
    ...               "readout": {"samples": 512, "ridge": [0.1]}, "test": {"samples": 256}})
    >>> [a.step for a in result.alignment], result.errors[0].ridge
    ([0, 1], 0.1)
    """

    config: ExperimentConfig
    version: str
    step_size: float
    errors: list[RidgeErrors]
    alignment: list[StepAlignment]
    predicted_update_cosine: float | None
    seconds: float
    peak_memory_bytes: int
    spectrum: SpectrumResult | None = None
    predicted_errors: PredictedErrors | None = None
    theory_seconds: float | None = None
    full_training: FullTrainingResult | None = None


@lru_cache(maxsize=1)
def _version() -> str:
    # Reading the installed metadata costs ~5 ms, a tenth of a small run's arithmetic.
    return version("giantstep")


def memory_estimate(config: ExperimentConfig) -> dict[str, int]:
    """Bytes the run needs, by the key that controls them (the largest is the one to lower)."""
    n, d = config.width, config.dim
    item = np.dtype(config.compute.dtype).itemsize
    rows = config.compute.block_size
    return {
        # W_0, W_t, the gradient sum, its block product and the cast copy used by BLAS.
        "width × dim (first layer)": 5 * 8 * n * d,
        # Train and test Gram matrices, eigenvectors and their workspace.
        "width (Gram matrices)": 4 * 8 * n * n,
        # Current and prefetched input blocks; pre-activations, values and slopes of one block.
        "compute.block_size": item * rows * (3 * d + 4 * n),
        # FᵀF, F_0ᵀF_0 (ridge and test sets), (F − F_ℓ)ᵀ(F − F_ℓ) for ℓ ≤ K, eigh workspace.
        "spectrum (Gram matrices)": (
            8 * n * n * (8 + config.spectrum.max_degree) if config.spectrum.enabled else 0
        ),
        # With theory.errors, the error theory's N × N matrices: Ω, the regularised
        # covariance, its inverse, M⁻¹ and the products of the fluctuation system.
        "width (the error theory's N × N matrices; theory.errors)": (
            10 * 8 * n * n if config.theory.errors else 0
        ),
        # Q = W Wᵀ of every step kept as Python lists for the result (~32 bytes a number), its
        # copies and its JSON text: ~120 bytes a number, measured at N = 1000.
        "measure.overlap_matrices (Q of every step, as lists)": (
            128 * n * n * (config.steps_taken() + 1) if config.measure.overlap_matrices else 0
        ),
    }


def check_memory(config: ExperimentConfig) -> None:
    """Raise ConfigError before any work if the run cannot fit in memory."""
    parts = memory_estimate(config)
    need = sum(parts.values())
    limit = config.compute.memory_limit or psutil.virtual_memory().available
    if need > limit:
        worst = max(parts, key=parts.get)
        key, advice = _key_of(worst, config), f"most of it goes to {worst} — lower it"
        if worst == "compute.block_size":
            smallest = config.compute.model_copy(update={"block_size": CHUNK_ROWS})
            parts = memory_estimate(config.model_copy(update={"compute": smallest}))
            if sum(parts.values()) > limit:  # a lower block size is not enough
                worst = max(parts, key=parts.get)
                key = _key_of(worst, config, rows_too_long=True)
                advice = (
                    f"even at the smallest compute.block_size ({CHUNK_ROWS} rows) it needs "
                    f"{readable_bytes(sum(parts.values()))}, most of it for {worst} — lower {key}"
                )
        source = "compute.memory_limit" if config.compute.memory_limit else "available memory"
        raise ConfigError(
            f"{key}: the run needs about {readable_bytes(need)} but {source} is "
            f"{readable_bytes(limit)}; {advice}"
        )


def _key_of(part: str, config: ExperimentConfig, rows_too_long: bool = False) -> str:
    """The config key to lower for a part of :func:`memory_estimate`: the larger of ``dim`` and
    ``width`` for the first layer, and for the blocks when even the smallest is too large
    (``rows_too_long``: a block row holds ``3 dim + 4 width`` numbers)."""
    if part.startswith("width × dim"):
        return "dim" if config.dim >= config.width else "width"
    if part == "compute.block_size" and rows_too_long:
        return "dim" if 3 * config.dim >= 4 * config.width else "width"
    return part.split()[0]


def readable_bytes(count: float) -> str:
    """Bytes in the largest binary unit that keeps a whole number in front: ``1.5 GiB``
    (three significant digits beyond a thousand PiB)."""
    for unit, power in (("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 2**power:
            value = count / 2**power
            return (
                f"{value:.3g} {unit}" if value >= 1000 and unit == "PiB" else f"{value:.1f} {unit}"
            )
    return f"{count:.0f} B"


def build(config: ExperimentConfig) -> tuple[TwoLayerNetwork, Teacher]:
    """The initial network and the teacher of a config (deterministic in ``config.seed``).

    Examples
    --------
    >>> from giantstep.config import validate_config
    >>> network, teacher = build(validate_config({"dim": 10, "width": 4}))
    >>> network.first_layer.shape, teacher.directions.shape
    ((4, 10), (1, 10))
    """
    activation = get_activation(config.activation)
    teacher = Teacher.draw(
        config.seed,
        config.target.expression,
        config.dim,
        config.target.noise,
        corruption=config.target.corruption,
        directions=config.target.directions,
    )
    network = initialize(
        config.seed,
        config.width,
        config.dim,
        activation=activation,
        preset=config.preset,
        output_scale=config.model.output_scale,
        first_layer=config.model.first_layer,
        second_layer=config.model.second_layer,
    )
    return network, teacher


def measure_alignment(
    step: int,
    network: TwoLayerNetwork,
    initial: TwoLayerNetwork,
    teacher: Teacher,
    *,
    measure: MeasureConfig | None = None,
    predicted: list[list[float]] | None = None,
) -> StepAlignment:
    """The :class:`StepAlignment` of ``network`` after ``step`` steps from ``initial``."""
    measure = measure or MeasureConfig()
    w = network.first_layer
    update = w - initial.first_layer
    # Weights about to diverge overflow here; the divergence itself is reported by the caller.
    with np.errstate(over="ignore", invalid="ignore"):
        m, q = overlaps(w, teacher.directions)
        summary = summarize(m, q)
        subspace = learned_subspace(w, teacher.directions, measure.learned_threshold)
    return StepAlignment(
        step=step,
        direction_alignment=direction_alignment(w, teacher.directions).tolist(),
        update_cosine=update_cosine(update, teacher.directions[0]) if step else None,
        overlap_m_rms=summary.m_rms,
        overlap_q_diagonal=summary.q_diagonal_mean,
        overlap_q_offdiagonal=summary.q_offdiagonal_rms,
        m=m.tolist() if measure.overlap_matrices else None,
        q=q.tolist() if measure.overlap_matrices else None,
        subspace_eigenvalues=subspace.eigenvalues.tolist(),
        learned=subspace.learned.tolist(),
        predicted=predicted,
    )


def predicted_subspaces(config: ExperimentConfig) -> list[list[list[float]]] | None:
    """The predictor's learned subspace after steps 0..T (rows), or None if out of its reach."""
    subspaces = _predicted_subspaces(
        config.target.expression, config.batch_exponent(), config.train.steps, config.activation
    )
    return None if subspaces is None else [[list(row) for row in u] for u in subspaces]


@lru_cache(maxsize=64)
def _predicted_subspaces(
    expression: str, batch_exponent: int, steps: int, activation: str
) -> tuple[tuple[tuple[float, ...], ...], ...] | None:
    """:func:`predicted_subspaces`, kept for the runs of a sweep that share a target: the
    predictor's rules took ~0.8 ms of every dandi-size run."""
    from giantstep.theory.learnable import predict

    try:
        prediction = predict(expression, batch_exponent, steps, activation=activation)
    except ValueError:
        return None  # e.g. a non-polynomial target of rank > 4
    return tuple(tuple(map(tuple, u.tolist())) for u in prediction.subspaces)


def predicted_update_cosine(config: ExperimentConfig, teacher: Teacher) -> float | None:
    """``γ`` for rank-1 targets (giant steps), else None.

    Corrupted labels keep ``E[y²]`` but only ``(1 − p)`` of ``μ_1(σ*)``: ``ζ``'s signal shrinks.
    Labels that are all zero (e.g. ``0*z1`` without noise) give no update and no ``γ``: None.
    """
    if teacher.target.rank != 1 or config.train.mode == "full":
        return None
    mu1 = float(teacher.target.linear_coefficients()[0]) * (1 - config.target.corruption)
    second_moment = teacher.target.second_moment(config.target.noise)
    if second_moment == 0:
        return None
    return direction_cosine(mu1, second_moment, config.dim, config.train.batch_size)


def run(
    config: ExperimentConfig | dict[str, Any], *, executor: Any = None, progress: bool = False
) -> RunResult:
    """Run one experiment: ``T`` giant steps, then the ridge readout for every ridge value.

    Parameters
    ----------
    config : ExperimentConfig or dict
        The experiment: a dict of config tables (as TOML gives them) or a config, validated
        first (a config's fields may have been assigned since it was made).
    executor : None or distributed.Client, optional
        Where every streamed sum (gradients, Gram matrices, spectrum sums) is computed: None
        here, or spread over a Dask cluster's workers with the same result (see
        :func:`giantstep.reduction.reduce_blocks`).
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    RunResult
        Errors per ridge value, alignment per step, the theory's predictions beside them.

    Raises
    ------
    ConfigError
        Before any work, for a config that is invalid or cannot fit in memory.
    DivergenceError
        If the weights or errors stop being finite.
    ValueError
        If ``executor`` is neither None nor a Dask client.

    Examples
    --------
    >>> result = run({"dim": 30, "width": 20, "train": {"batch_size": 512},
    ...               "readout": {"samples": 512, "ridge": [0.1]}, "test": {"samples": 256}})
    >>> [round(e.test_error, 3) for e in result.errors]
    [1.439]
    """
    check_executor(executor)
    if isinstance(config, ExperimentConfig):
        # Validated when made, but its fields can be assigned since (ridge = [-0.05] ran, and
        # block_size = 0 raised ZeroDivisionError): checked again, as a dict would be. Its
        # activation passed the py: gate when it was made.
        config = validate_config(config.model_dump(), allow_python=True)
    else:
        config = validate_config(config)
    check_memory(config)
    local = executor is None
    with blas_threads_for(config.width * config.dim) if local else nullcontext():
        return _run(config, executor, progress)


def _set_read_next(config: ExperimentConfig, steps_done: int) -> tuple[SampleStream, int, int]:
    """(stream, rows, block size) of the set a run reads next, before its first step
    (``steps_done`` 0) or after its last: the first gradient batch — again after the steps for
    the spectrum's ``ζ`` (``spectrum.measure_spectrum``) — else the ridge set."""
    size = config.compute.block_size
    if config.train.steps and (steps_done == 0 or config.spectrum.enabled):
        return config.stream(TRAIN, 0), config.train.batch_size, size
    return config.stream(RIDGE), config.readout.samples, size


def _run(config: ExperimentConfig, executor: Any, progress: bool) -> RunResult:
    """The body of :func:`run`, for a validated config that fits in memory."""
    started = time.perf_counter()
    eta = config.step_size()
    c = config.compute
    plan = StepPlan(
        config.train.batch_size,
        c.block_size,
        residual=config.train.residual,
        reuse_batch=config.train.reuse_batch,
    )

    full = config.train.mode == "full"
    epochs = len(config.train.full.weight_decay) * (config.train.full.epochs + 1)
    total_blocks = (
        (epochs if full else config.train.steps)
        * block_count(config.train.batch_size, c.block_size)
        + block_count(config.readout.samples, c.block_size)
        + block_count(config.test.samples, c.block_size)
    )
    bar = tqdm(total=total_blocks, unit="block", disable=not progress, leave=False)
    # Every block is drawn when it is needed, on every core, then computed on every core (a
    # large network's products on BLAS's threads, a small one's blocks in parts; reduction);
    # the first block of a set is begun while this thread works on one core before it.
    drawing = prefetching(0) if executor is None and not full else nullcontext()
    with bar, drawing:
        draw_ahead(*_set_read_next(config, 0))
        initial, teacher = build(config)
        predicted = None if full else predicted_subspaces(config)

        def measured(t: int, net: TwoLayerNetwork) -> StepAlignment:
            return measure_alignment(
                t,
                net,
                initial,
                teacher,
                measure=config.measure,
                predicted=predicted[t] if predicted else None,
            )

        alignment = [measured(0, initial)]
        network = initial
        full_training = None
        if full:
            network, full_training = train_fully(
                initial,
                teacher,
                config.stream(TRAIN, 0),
                config.stream(TEST),
                config.train.full,
                n_samples=config.train.batch_size,
                n_test=config.test.samples,
                block_size=c.block_size,
                executor=executor,
                progress=bar.update,
                describe=bar.set_description,
            )
            alignment.append(measured(1, network))
        steps = giant_steps(
            initial,
            teacher,
            plan,
            steps=0 if full else config.train.steps,
            step_size=eta,
            seed=config.seed,
            distribution=config.data.distribution,
            dtype=c.dtype,
            executor=executor,
            progress=bar.update,
        )
        for t, network in enumerate(steps, start=1):
            bar.set_description(f"step {t}/{config.train.steps}")
            if t == config.train.steps:
                draw_ahead(*_set_read_next(config, t))
            alignment.append(measured(t, network))
        bar.set_description("readout")
        spectrum = None
        if config.spectrum.enabled:
            # One pass per set feeds both the readout and the spectrum.
            streamed = measure_spectrum(
                config,
                initial,
                network,
                teacher,
                step_size=eta,
                executor=executor,
                progress=bar.update,
            )
            spectrum = streamed.result
            train_stats, test_stats = streamed.ridge.statistics(), streamed.test.statistics()
        else:
            sets = {"block_size": c.block_size, "executor": executor, "progress": bar.update}
            train_stats = feature_statistics(
                network, teacher, config.stream(RIDGE), n_samples=config.readout.samples, **sets
            )
            test_stats = feature_statistics(
                network, teacher, config.stream(TEST), n_samples=config.test.samples, **sets
            )
        for stats in (train_stats, test_stats):  # before the eigensolver, which refuses them
            check_finite(stats.gram, network, config.steps_taken(), "the features σ(XWᵀ)")
        coefficients = ridge_path(train_stats, config.readout.ridge)
    train_errors = train_stats.mean_squared_error(coefficients)
    test_errors = test_stats.mean_squared_error(coefficients)
    if not (np.isfinite(train_errors).all() and np.isfinite(test_errors).all()):
        raise DivergenceError(config.steps_taken(), "the readout errors")
    predicted_errors = theory_seconds = None
    if config.theory.errors:
        theory_started = time.perf_counter()
        predicted_errors = predict_errors(config, initial, teacher, network)
        theory_seconds = time.perf_counter() - theory_started
    return RunResult(
        config=config,
        version=_version(),
        step_size=eta,
        errors=[
            RidgeErrors(ridge=lam, train_error=float(tr), test_error=float(te))
            for lam, tr, te in zip(config.readout.ridge, train_errors, test_errors, strict=True)
        ],
        alignment=alignment,
        predicted_update_cosine=predicted_update_cosine(config, teacher),
        seconds=time.perf_counter() - started,
        peak_memory_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        spectrum=spectrum,
        predicted_errors=predicted_errors,
        theory_seconds=theory_seconds,
        full_training=full_training,
    )
