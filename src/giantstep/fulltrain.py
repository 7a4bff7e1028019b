"""A fully trained network: both layers jointly, full-batch GD or Adam (``train.mode = "full"``).

The baseline a giant step is compared with (the first open question of Moniri et al.): the
same network, initialised as usual, trained on gradient batch 0 — all of its ``n`` samples,
reused every epoch — on

    ``L(W, a) = (1/2n) Σ_i (y_i − f(x_i))² + (λ_wd/2)(‖W‖² + ‖a‖²)``,
    ``f(x) = s Σ_j a_j σ(⟨w_j, x⟩)``,

until the objective stops improving: it has not fallen by a relative ``train.full.tolerance``
in ``train.full.patience`` epochs (else training stops after ``train.full.epochs`` updates and
the result says it did not converge). Every epoch is one streamed sum over the batch
(:class:`FullGradientSum`: the gradients of both layers and the loss), like every other sum of
giantstep, so memory does not grow with ``n``.

Weight decay: each value of ``train.full.weight_decay`` is trained from the same
initialisation on the first ``n − n_val`` rows of the batch and scored on the last ``n_val``
(``train.full.validation_fraction``, rounded so the split falls on a chunk of rows); the value
with the smallest validation error is kept, and its network is the result (it is not refitted
on the validation rows). A single value with ``validation_fraction = 0`` trains on all ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from pydantic import BaseModel

from giantstep.activations import Activation
from giantstep.data import CHUNK_ROWS, Block, SampleStream
from giantstep.linalg import blas_threads_for
from giantstep.model import TwoLayerNetwork
from giantstep.reduction import reduce_blocks
from giantstep.targets import Teacher
from giantstep.train import DivergenceError

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8

Progress = Callable[[int], object] | None


class FullTrainingDivergence(DivergenceError):
    """Full training produced a non-finite loss or weights; ``epoch`` says where."""

    def __init__(self, epoch: int, weight_decay: float, what: str, lower: str = "learning_rate"):
        self.epoch = epoch
        self.weight_decay = weight_decay
        super().__init__(
            1,
            what,
            f"the full training diverged at epoch {epoch} (weight decay {weight_decay:g}): "
            f"{what} not finite (lower train.full.{lower})",
        )


def split_rows(n_samples: int, validation_fraction: float) -> tuple[int, int]:
    """(training rows, validation rows) of a batch of ``n_samples``.

    The training rows are a whole number of chunks (the validation rows start on a chunk, so
    they are keyed like any other rows): ``n_train = CHUNK_ROWS · floor((1 − f)·n / CHUNK_ROWS)``.
    Raises ValueError if that leaves no training chunk or no validation row.

    Examples
    --------
    >>> split_rows(4000, 0.2), split_rows(4000, 0.0), split_rows(12800, 0.34)
    ((3072, 928), (4000, 0), (8448, 4352))
    """
    if validation_fraction == 0:
        return n_samples, 0
    # The fraction as written (its shortest decimal), in exact arithmetic: in floats,
    # (1 - 0.34) * 12800 / 256 is 32.99..., one chunk short of the 33 asked for.
    kept = (1 - Fraction(repr(float(validation_fraction)))) * n_samples
    n_train = CHUNK_ROWS * math.floor(kept / CHUNK_ROWS)
    if n_train < CHUNK_ROWS or n_train >= n_samples:
        raise ValueError(
            f"train.full.validation_fraction: {validation_fraction} of a batch of {n_samples} "
            f"leaves {n_train} training and {n_samples - n_train} validation rows (the training "
            f"rows are whole chunks of {CHUNK_ROWS}: raise train.batch_size or change the fraction)"
        )
    return n_train, n_samples - n_train


@dataclass(frozen=True)
class Rows:
    """Rows ``first ..`` of a stream, as a stream of their own (the validation split)."""

    stream: SampleStream
    first: int

    @property
    def dtype(self) -> np.dtype:
        """The rows' dtype."""
        return self.stream.dtype

    def blocks(self, n_samples: int, block_size: int, start: int = 0):
        """Rows ``first + start ..`` in blocks (see ``SampleStream.blocks``)."""
        return self.stream.blocks(n_samples, block_size, start=self.first + start)


@dataclass
class LossAndGradients:
    """Partial sums over rows: ``Σ Gᵀx`` (N, d), ``Σ σ(Wx) r`` (N,), ``Σ r²`` and the count."""

    first_layer: np.ndarray
    second_layer: np.ndarray
    sum_sq: float = 0.0
    count: int = 0

    def __add__(self, other: LossAndGradients) -> LossAndGradients:
        return LossAndGradients(
            self.first_layer + other.first_layer,
            self.second_layer + other.second_layer,
            self.sum_sq + other.sum_sq,
            self.count + other.count,
        )

    @property
    def mean_squared_error(self) -> float:
        """``(1/n) Σ (y − f)²``."""
        return self.sum_sq / self.count


@dataclass(frozen=True)
class FullGradientSum:
    """The loss and the gradients of both layers, block by block (a ``StreamedSum``).

    With ``r = y − f(x)`` and ``G = σ'(XWᵀ) ⊙ (r aᵀ)``: ``Σ r²``, ``Σ Gᵀ X`` (N, d) and
    ``Σ σ(XWᵀ)ᵀ r`` (N,); ``∇_W = −(s/n) Σ GᵀX``, ``∇_a = −(s/n) Σ σᵀr``. With
    ``gradients=False`` only the loss (a validation or test error).
    """

    name = "full gradient"
    weights: np.ndarray
    second_layer: np.ndarray
    output_scale: float
    activation: Activation
    teacher: Teacher
    gradients: bool = True

    def zero(self) -> LossAndGradients:
        """Zeros, float64."""
        if not self.gradients:
            return LossAndGradients(np.zeros(0), np.zeros(0))
        return LossAndGradients(np.zeros(self.weights.shape), np.zeros(self.weights.shape[0]))

    def add(self, total: LossAndGradients, block: Block) -> LossAndGradients:
        """Add one block's loss (and gradient sums)."""
        _, y = self.teacher.labels(block)
        pre = block.x @ self.weights.T
        if self.gradients:
            value, slope = self.activation.value_and_derivative(pre)
        else:
            value = self.activation(pre)
        r = y - self.output_scale * (value @ self.second_layer)
        total.sum_sq += float(r.astype(np.float64) @ r)
        total.count += len(r)
        if self.gradients:
            total.second_layer += value.T @ r
            slope *= r[:, None]
            slope *= self.second_layer
            total.first_layer += slope.T @ block.x
        return total


def loss_sum(
    network: TwoLayerNetwork, teacher: Teacher, dtype: Any, gradients: bool
) -> FullGradientSum:
    """The streamed sum for ``network`` on blocks of ``dtype``."""
    return FullGradientSum(
        network.first_layer.astype(dtype),
        network.second_layer.astype(dtype),
        network.output_scale,
        network.activation,
        teacher,
        gradients,
    )


def mean_squared_error(
    network: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream | Rows,
    *,
    n_samples: int,
    block_size: int,
    executor: Any = None,
    progress: Progress = None,
) -> float:
    """``(1/n) Σ (y − f(x))²`` of the network's own output on ``n_samples`` rows of ``stream``."""
    summand = loss_sum(network, teacher, stream.dtype, gradients=False)
    total = reduce_blocks(
        summand, stream, n_samples, block_size, executor=executor, progress=progress
    )
    return total.mean_squared_error


class Candidate(BaseModel):
    """One weight decay value, trained on the training rows.

    Attributes
    ----------
    weight_decay : float
    epochs : int
        Updates taken.
    converged : bool
        Stopped because the objective stopped improving (not at ``train.full.epochs``).
    train_error : float
        ``(1/n_train) Σ (y − f)²`` at the end.
    validation_error : float or None
        The same on the validation rows (None without a validation split).
    """

    weight_decay: float
    epochs: int
    converged: bool
    train_error: float
    validation_error: float | None


class FullTrainingResult(BaseModel):
    """What full training did: the chosen weight decay, its loss curve, the network's errors.

    Attributes
    ----------
    optimizer, learning_rate
        As configured.
    weight_decay : float
        The chosen value (smallest validation error).
    epochs : int
        Updates taken by the chosen run.
    converged : bool
        Whether it stopped because the objective stopped improving.
    train_rows, validation_rows : int
        The split of the batch.
    train_error, validation_error : float
        The network's own mean squared error on them (validation None without a split).
    test_error : float
        The network's own ``(1/n) Σ (y − f(x))²`` on the test set (both layers trained; the
        run's ``errors`` are the ridge readout refitted on its features).
    loss_curve : list of float
        Training mean squared error before each update (epoch 0 is the initialisation) and at
        the end.
    validation_curve : list of float or None
        The same on the validation rows.
    candidates : list of Candidate
        Every weight decay tried.
    """

    optimizer: str
    learning_rate: float
    weight_decay: float
    epochs: int
    converged: bool
    train_rows: int
    validation_rows: int
    train_error: float
    validation_error: float | None
    test_error: float
    loss_curve: list[float]
    validation_curve: list[float] | None
    candidates: list[Candidate]


@dataclass
class _Fit:
    network: TwoLayerNetwork
    epochs: int
    converged: bool
    loss_curve: list[float] = field(default_factory=list)
    validation_curve: list[float] = field(default_factory=list)


def _fit(
    initial: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream,
    settings: Any,
    weight_decay: float,
    *,
    n_train: int,
    n_validation: int,
    block_size: int,
    executor: Any,
    progress: Progress,
    describe: Callable[[str], object] | None,
) -> _Fit:
    w = initial.first_layer.astype(np.float64, copy=True)
    a = initial.second_layer.astype(np.float64, copy=True)
    s = initial.output_scale
    adam = settings.optimizer == "adam"
    moments = [np.zeros_like(w), np.zeros_like(a), np.zeros_like(w), np.zeros_like(a)]
    best, since = math.inf, 0
    validation = Rows(stream, n_train)
    fit = _Fit(initial, 0, False)
    for epoch in range(settings.epochs + 1):
        if describe:
            describe(f"full training, weight decay {weight_decay:g}, epoch {epoch}")
        network = TwoLayerNetwork(w, a, s, initial.activation)
        with np.errstate(over="ignore", invalid="ignore"):
            sums = reduce_blocks(
                loss_sum(network, teacher, stream.dtype, gradients=True),
                stream,
                n_train,
                block_size,
                executor=executor,
                progress=progress,
            )
        loss = sums.mean_squared_error
        if not math.isfinite(loss):
            raise FullTrainingDivergence(epoch, weight_decay, "the training loss is")
        fit.loss_curve.append(loss)
        if n_validation:
            fit.validation_curve.append(
                mean_squared_error(
                    network, teacher, validation, n_samples=n_validation,
                    block_size=block_size, executor=executor, progress=progress,
                )
            )  # fmt: skip
        fit.network, fit.epochs = network, epoch
        objective = loss / 2 + weight_decay / 2 * (float(np.vdot(w, w)) + float(a @ a))
        if objective < best * (1 - settings.tolerance):
            best, since = objective, 0
        else:
            since += 1
        if since >= settings.patience:
            fit.converged = True
            break
        if epoch == settings.epochs:
            break
        with np.errstate(over="ignore", invalid="ignore"):
            grad_w = sums.first_layer * (-s / n_train) + weight_decay * w
            grad_a = sums.second_layer * (-s / n_train) + weight_decay * a
            if adam:
                b1, b2 = ADAM_BETAS
                t = epoch + 1
                for i, g in enumerate((grad_w, grad_a)):
                    moments[i] *= b1
                    moments[i] += (1 - b1) * g
                    moments[i + 2] *= b2
                    moments[i + 2] += (1 - b2) * g * g
                    if not np.isfinite(moments[i + 2]).all():
                        # The step m/sqrt(v) would be 0: frozen weights, read as converged.
                        raise FullTrainingDivergence(
                            epoch + 1, weight_decay, "Adam's squared gradients are", "weight_decay"
                        )
                steps = [
                    (moments[i] / (1 - b1**t))
                    / (np.sqrt(moments[i + 2] / (1 - b2**t)) + ADAM_EPSILON)
                    for i in range(2)
                ]
            else:
                steps = [grad_w, grad_a]
            w = w - settings.learning_rate * steps[0]
            a = a - settings.learning_rate * steps[1]
        if not (np.isfinite(w).all() and np.isfinite(a).all()):
            raise FullTrainingDivergence(epoch + 1, weight_decay, "the weights are")
    return fit


def train_fully(
    initial: TwoLayerNetwork,
    teacher: Teacher,
    stream: SampleStream,
    test_stream: SampleStream,
    settings: Any,
    *,
    n_samples: int,
    n_test: int,
    block_size: int,
    executor: Any = None,
    progress: Progress = None,
    describe: Callable[[str], object] | None = None,
) -> tuple[TwoLayerNetwork, FullTrainingResult]:
    """Train both layers on rows ``0 .. n_samples`` of ``stream``; choose the weight decay.

    Parameters
    ----------
    initial : TwoLayerNetwork
        The network at initialisation (every weight decay starts from it).
    teacher : Teacher
        Labels the rows.
    stream, test_stream : SampleStream
        The batch (gradient batch 0) and the test set.
    settings : FullTrainingConfig
        ``train.full``: optimizer, learning rate, epochs, patience, tolerance, weight decays,
        validation fraction.
    n_samples, n_test, block_size : int
        Rows of the batch and of the test set; rows per block.
    executor : None or distributed.Client
        Where every epoch's sum runs (see :func:`giantstep.reduction.reduce_blocks`).
    progress, describe : callable, optional
        Called with the number of blocks done, and with a line saying where training is.

    Returns
    -------
    (TwoLayerNetwork, FullTrainingResult)
        The trained network (chosen weight decay) and what training did.

    Raises
    ------
    FullTrainingDivergence
        A ``DivergenceError``, with the epoch, if the loss or the weights stop being finite.

    Examples
    --------
    >>> from giantstep.config import FullTrainingConfig
    >>> from giantstep.data import TEST, TRAIN, SampleStream
    >>> from giantstep.model import initialize
    >>> net = initialize(0, 8, 5, activation="tanh")
    >>> teacher = Teacher.draw(0, "z1", 5)
    >>> trained, result = train_fully(
    ...     net, teacher, SampleStream(0, (TRAIN, 0), 5), SampleStream(0, (TEST, 0), 5),
    ...     FullTrainingConfig(learning_rate=0.05, epochs=200), n_samples=512, n_test=512,
    ...     block_size=256)
    >>> result.loss_curve[-1] < result.loss_curve[0] / 10
    True
    """
    n_train, n_validation = split_rows(n_samples, settings.validation_fraction)
    with blas_threads_for(initial.first_layer.size) if executor is None else nullcontext():
        return _train(
            initial, teacher, stream, test_stream, settings, n_train=n_train,
            n_validation=n_validation, n_test=n_test, block_size=block_size, executor=executor,
            progress=progress, describe=describe,
        )  # fmt: skip


def _train(
    initial, teacher, stream, test_stream, settings, *, n_train, n_validation, n_test,
    block_size, executor, progress, describe,
) -> tuple[TwoLayerNetwork, FullTrainingResult]:  # fmt: skip
    fits = []
    for weight_decay in settings.weight_decay:
        fits.append(
            _fit(
                initial, teacher, stream, settings, weight_decay, n_train=n_train,
                n_validation=n_validation, block_size=block_size, executor=executor,
                progress=progress, describe=describe,
            )
        )  # fmt: skip
    candidates = [
        Candidate(
            weight_decay=wd,
            epochs=f.epochs,
            converged=f.converged,
            train_error=f.loss_curve[-1],
            validation_error=f.validation_curve[-1] if n_validation else None,
        )
        for wd, f in zip(settings.weight_decay, fits, strict=True)
    ]
    # The first smallest validation error wins (ties: the earlier value, as listed).
    chosen = min(
        range(len(fits)), key=lambda i: candidates[i].validation_error if n_validation else 0.0
    )
    fit = fits[chosen]
    test_error = mean_squared_error(
        fit.network, teacher, test_stream, n_samples=n_test, block_size=block_size,
        executor=executor, progress=progress,
    )  # fmt: skip
    return fit.network, FullTrainingResult(
        optimizer=settings.optimizer,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay[chosen],
        epochs=fit.epochs,
        converged=fit.converged,
        train_rows=n_train,
        validation_rows=n_validation,
        train_error=fit.loss_curve[-1],
        validation_error=candidates[chosen].validation_error,
        test_error=test_error,
        loss_curve=fit.loss_curve,
        validation_curve=fit.validation_curve if n_validation else None,
        candidates=candidates,
    )
