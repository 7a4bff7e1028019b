"""Predicted learning curves without simulating the readout (``giantstep theory errors``).

The error theory (:mod:`giantstep.theory.errors`) needs only W₀, a, β and, for the
``trained_layer`` variant, the trained layer W₁ — never the ridge set or the test set. A curve
over the ridge-set size ``readout.samples`` draws W₀ and takes the step once (W₁ does not depend
on the ridge set) and solves every size with one decomposition; a curve over the gradient batch
``train.batch_size`` takes the step once per value (it changes W₁, and ``η = c·n^α`` with it)
and solves the random-features baseline once (it depends on W₀ only).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import psutil
from pydantic import BaseModel

from giantstep.config import ConfigError, ExperimentConfig, validate_config
from giantstep.experiment import build, memory_estimate, readable_bytes
from giantstep.theory.errors import (
    VARIANTS,
    ErrorVariant,
    PredictedErrors,
    full_solver_variants,
    one_step_scope,
    predict_learning_curve,
)
from giantstep.train import StepPlan, giant_steps

#: The config keys a curve can run over.
CURVE_KEYS = ("readout.samples", "train.batch_size")
#: Most points of one curve (each a full solve of the theory).
MAX_POINTS = 1000


def geometric_grid(start: int, stop: int, count: int) -> list[int]:
    """``count`` integers from ``start`` to ``stop``, evenly spaced in log, rounded; repeated
    values (a dense grid of small integers) are kept once."""
    if count == 1:
        return [start]
    ratio = (stop / start) ** (1 / (count - 1))
    values = [round(start * ratio**i) for i in range(count)]
    values[-1] = stop
    return sorted(set(values))


def parse_grid(text: str) -> tuple[str, list[int]]:
    """``"readout.samples=100:100000:50"`` → ``("readout.samples", [100, 115, …, 100000])``.

    Raises ConfigError starting with ``over`` and naming the item: not ``KEY=START:STOP:COUNT``,
    a key other than :data:`CURVE_KEYS`, a START, STOP or COUNT that is not an integer, or
    ``1 ≤ START ≤ STOP``, ``1 ≤ COUNT ≤ MAX_POINTS`` violated (a single point needs
    ``START = STOP`` or ``COUNT = 1``).
    """
    key, sep, grid = text.partition("=")
    key = key.strip()
    parts = grid.split(":")
    if not sep or not key or len(parts) != 3:
        raise ConfigError(f"over {text!r}: expected KEY=START:STOP:COUNT")
    if key not in CURVE_KEYS:
        raise ConfigError(
            f"over {text!r}: a curve runs over {' or '.join(CURVE_KEYS)}, not {key!r}"
        )
    numbers = []
    for name, part in zip(("START", "STOP", "COUNT"), parts, strict=True):
        try:
            numbers.append(int(part.strip().replace("_", "")))
        except ValueError:
            raise ConfigError(f"over {text!r}: {name} must be an integer, got {part!r}") from None
    start, stop, count = numbers
    if start < 1 or stop < start:
        raise ConfigError(f"over {text!r}: needs 1 ≤ START ≤ STOP")
    if not 1 <= count <= MAX_POINTS:
        raise ConfigError(f"over {text!r}: COUNT must be between 1 and {MAX_POINTS}")
    if count > 1 and start == stop:
        raise ConfigError(f"over {text!r}: START = STOP gives one point; use COUNT = 1")
    return key, geometric_grid(start, stop, count)


class CurvePoint(BaseModel):
    """The predicted errors at one value of the curve's key."""

    value: int
    predicted_errors: PredictedErrors


class LearningCurve(BaseModel):
    """Predicted errors over a grid of ``key`` (the other keys as in ``config``).

    Attributes
    ----------
    config : ExperimentConfig
        The config the curve starts from.
    key : str
        ``readout.samples`` or ``train.batch_size``.
    points : list of CurvePoint
        One per value, ascending.
    variants : list of str
        The variants asked for (the others are None with the reason "not computed").
    seconds : float
        Wall time.
    """

    config: ExperimentConfig
    key: str
    points: list[CurvePoint]
    variants: list[str]
    seconds: float


def _with(config: ExperimentConfig, key: str, value: int) -> ExperimentConfig:
    data = config.model_dump(mode="json")
    table, leaf = key.split(".")
    data[table][leaf] = value
    return validate_config(data, allow_python=True)  # a copy of an accepted config


def check_theory_memory(config: ExperimentConfig) -> None:
    """Raise ConfigError naming ``width`` if W₀, W₁ and the solver's N × N matrices (the
    estimate of :func:`giantstep.experiment.memory_estimate`) do not fit in memory."""
    parts = memory_estimate(
        config.model_copy(update={"theory": config.theory.model_copy(update={"errors": True})})
    )
    layers = sum(v for k, v in parts.items() if k.startswith("width × dim"))
    solver = sum(v for k, v in parts.items() if k.startswith("width (the error"))
    limit = config.compute.memory_limit or psutil.virtual_memory().available
    if layers + solver > limit:
        source = "compute.memory_limit" if config.compute.memory_limit else "available memory"
        # Name the size that makes the larger part: N × N matrices grow with width alone.
        key = "width" if solver >= layers else "dim, width"
        raise ConfigError(
            f"{key}: the theory needs about {readable_bytes(layers + solver)} but {source} "
            f"is {readable_bytes(limit)} (the first layers, N × d, and the solver's N × N "
            "matrices)"
        )


def _trained(config: ExperimentConfig, initial, teacher):
    """The network after the config's step, or None when trained_layer is out of scope anyway."""
    if one_step_scope(config, teacher) is not None:
        return None
    plan = StepPlan(
        config.train.batch_size,
        config.compute.block_size,
        residual=config.train.residual,
        reuse_batch=config.train.reuse_batch,
    )
    steps = giant_steps(
        initial,
        teacher,
        plan,
        steps=1,
        step_size=config.step_size(),
        seed=config.seed,
        distribution=config.data.distribution,
        dtype=config.compute.dtype,
    )
    return list(steps)[-1]


def subgrid(values: Sequence[int], count: int) -> list[int]:
    """``count`` of ``values`` (sorted), evenly spaced in position — in log for a geometric
    grid — the first and the last included."""
    values = sorted(values)
    if count >= len(values):
        return list(values)
    if count == 1:
        return [values[-1]]
    step = (len(values) - 1) / (count - 1)
    return sorted({values[round(i * step)] for i in range(count)})


def _merged(points: dict[str, PredictedErrors], sources: dict[str, str]) -> PredictedErrors:
    """One PredictedErrors taking each variant from the point ``sources[variant]`` names."""
    return PredictedErrors(**{name: getattr(points[sources[name]], name) for name in VARIANTS})


def predict_curve(
    config: ExperimentConfig,
    key: str = "readout.samples",
    values: Sequence[int] | None = None,
    *,
    variants: Collection[str] = VARIANTS,
    slow_points: int | None = None,
) -> LearningCurve:
    """The theory's train and test errors over a grid of ridge-set or batch sizes.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment; its ``readout.ridge`` values give one line each.
    key : {"readout.samples", "train.batch_size"}
        What the curve runs over.
    values : sequence of int, optional
        The grid (default: the config's own value of ``key``, one point). Each value must be
        valid for ``key`` (a positive sample count).
    variants : collection of str
        Of ``random_features``, ``spiked``, ``trained_layer`` (default all). The step is taken
        only for ``trained_layer``.
    slow_points : int, optional
        Solve the variants that need the N × N solver
        (:func:`giantstep.theory.errors.full_solver_variants`) at only this many of the
        values, evenly spaced in log (:func:`subgrid`); None: at every value. Elsewhere they
        are None with the reason.

    Returns
    -------
    LearningCurve
        One :class:`CurvePoint` per distinct value, ascending.

    Raises
    ------
    ConfigError
        For a key other than :data:`CURVE_KEYS`, an unknown variant, an invalid value, a
        slow_points below 1, or a width whose N × N matrices would not fit in memory.

    Examples
    --------
    >>> from giantstep.config import validate_config
    >>> config = validate_config({"dim": 60, "width": 60, "train": {"steps": 0}})
    >>> curve = predict_curve(config, "readout.samples", [60, 240], variants=["random_features"])
    >>> [round(p.predicted_errors.random_features.errors[0].test_error, 3) for p in curve.points]
    [7.041, 1.178]
    """
    started = time.perf_counter()
    if key not in CURVE_KEYS:
        raise ConfigError(f"key: a curve runs over {' or '.join(CURVE_KEYS)}, not {key!r}")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise ConfigError(
            f"variants: {'unknown ' + repr(unknown[0]) if unknown else 'none given'}; "
            f"choose among {', '.join(VARIANTS)}"
        )
    if slow_points is not None and slow_points < 1:
        raise ConfigError(f"slow_points: must be at least 1, got {slow_points}")
    variants = [v for v in VARIANTS if v in variants]
    table, leaf = key.split(".")
    if values is None:
        values = [getattr(getattr(config, table), leaf)]
    values = sorted({int(v) for v in values})
    configs = [_with(config, key, v) for v in values]  # every value validated before any work
    check_theory_memory(config)
    sparse = set(values if slow_points is None else subgrid(values, slow_points))
    initial, teacher = build(config)
    # The variants solved only on the subgrid: the trained layer's neurons are never equal
    # (each row's spike r_j differs), the predicted layer's only for unequal a_j (moniri).
    slow = []
    if slow_points is not None:
        slow = [v for v in full_solver_variants(config, initial, teacher) if v in variants]
        if "trained_layer" in variants and one_step_scope(config, teacher) is None:
            slow.append("trained_layer")
    skipped = PredictedErrors(
        **{
            name: ErrorVariant(
                errors=None,
                reason=f"not computed at this {key}: the N × N solver runs at {len(sparse)} "
                f"of the {len(values)} values (slow_points = {slow_points})",
            )
            for name in VARIANTS
        }
    )
    fast = [v for v in variants if v not in slow]
    if key == "readout.samples":
        trained = _trained(config, initial, teacher) if "trained_layer" in variants else None
        everywhere = predict_learning_curve(
            config, initial, teacher, values, trained, variants=fast
        )
        chosen = sorted(sparse)
        solved = dict.fromkeys(values, skipped)
        if slow:
            points = predict_learning_curve(
                config, initial, teacher, chosen, trained, variants=slow
            )
            solved.update(zip(chosen, points, strict=True))
        sources = {name: "slow" if name in slow else "fast" for name in VARIANTS}
        predicted = [
            _merged({"fast": f, "slow": solved[v]}, sources)
            for v, f in zip(values, everywhere, strict=True)
        ]
    else:
        # W₀ (hence random features) is the same for every batch size: solved once.
        baseline = predict_learning_curve(
            config,
            initial,
            teacher,
            [config.readout.samples],
            variants=[v for v in variants if v == "random_features"],
        )[0]
        predicted = []
        for value, point in zip(values, configs, strict=True):
            here = [
                v for v in variants if v != "random_features" and (v in fast or value in sparse)
            ]
            trained = _trained(point, initial, teacher) if "trained_layer" in here else None
            at = predict_learning_curve(
                point, initial, teacher, [point.readout.samples], trained, variants=here
            )[0]
            sources = {
                name: "skipped" if name in slow and name not in here else "step"
                for name in VARIANTS
            }
            sources["random_features"] = "baseline"
            predicted.append(
                _merged({"baseline": baseline, "step": at, "skipped": skipped}, sources)
            )
    return LearningCurve(
        config=config,
        key=key,
        points=[
            CurvePoint(value=v, predicted_errors=p) for v, p in zip(values, predicted, strict=True)
        ],
        variants=list(variants),
        seconds=time.perf_counter() - started,
    )


def curve_rows(curve: LearningCurve) -> list[dict[str, Any]]:
    """The curve as flat rows: value, ridge and ``<variant>.test_error`` / ``.train_error``
    (None where a variant has no number)."""
    rows = []
    ridges = curve.config.readout.ridge
    for point in curve.points:
        for i, ridge in enumerate(ridges):
            row: dict[str, Any] = {curve.key: point.value, "ridge": ridge}
            for name in VARIANTS:
                errors = getattr(point.predicted_errors, name).errors
                row[f"{name}.test_error"] = errors[i].test_error if errors else None
                row[f"{name}.train_error"] = errors[i].train_error if errors else None
            rows.append(row)
    return rows
