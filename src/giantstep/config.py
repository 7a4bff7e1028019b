"""The experiment config: one validated object, readable from TOML, with dotted overrides.

Every field is checked at the door (pydantic): a bad value raises ``ConfigError`` whose message
names the dotted key and the accepted range, before any work starts.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

PositiveInt = Annotated[int, Field(gt=0)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

#: Rows drawn from one counter-based generator; the unit that makes results independent of
#: how the work is cut. ``compute.block_size`` must be a multiple of it.
CHUNK_ROWS = 256


class ConfigError(ValueError):
    """A config value is invalid; the message names the dotted key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class StepSizeConfig(_Section):
    """``η = scale · n^batch_exponent · N^width_exponent · d^dim_exponent``."""

    scale: FiniteFloat = 1.0
    batch_exponent: FiniteFloat = 0.0
    width_exponent: FiniteFloat = 0.0
    dim_exponent: FiniteFloat = 0.0


class TrainConfig(_Section):
    steps: Annotated[int, Field(ge=0)] = 1
    batch_size: PositiveInt = 4000
    step_size: StepSizeConfig = StepSizeConfig()
    residual: Literal["y-f", "y"] = "y-f"
    reuse_batch: bool = False


class TargetConfig(_Section):
    expression: str = "z1 + He2(z1)/2"
    noise: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        from giantstep.targets import parse_target

        parse_target(value)  # raises ValueError with the reason
        return value


class ModelConfig(_Section):
    """Overrides of the preset; ``None`` keeps the preset's choice."""

    output_scale: FiniteFloat | None = None
    first_layer: Literal["sphere", "gaussian"] | None = None
    second_layer: Literal["gaussian", "signs", "ones"] | None = None


class DataConfig(_Section):
    distribution: Literal["gaussian", "rademacher", "sphere"] = "gaussian"


class ReadoutConfig(_Section):
    samples: PositiveInt = 4000
    ridge: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = [1e-3, 1e-2, 1e-1]

    @field_validator("ridge", mode="before")
    @classmethod
    def _ridge_list(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        return value

    @field_validator("ridge")
    @classmethod
    def _non_empty(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one ridge value")
        return value


class TestConfig(_Section):
    samples: PositiveInt = 2000


class ComputeConfig(_Section):
    dtype: Literal["float64", "float32"] = "float64"
    block_size: PositiveInt = 4096
    #: Bytes the run may use; ``None`` means the machine's available memory.
    memory_limit: PositiveInt | None = None

    @field_validator("block_size")
    @classmethod
    def _multiple_of_chunk(cls, value: int) -> int:
        if value % CHUNK_ROWS:
            raise ValueError(f"must be a positive multiple of {CHUNK_ROWS} (got {value})")
        return value


class SpectrumConfig(_Section):
    """Spectrum of the features after the steps (Moniri et al.; see ``giantstep.spectrum``)."""

    enabled: bool = False
    #: Singular values reported (the learned spikes are looked for among them).
    top: PositiveInt = 20
    #: K: degrees of the polynomial probes and of the spiked approximation F_ℓ, ℓ = 1..K.
    max_degree: Annotated[int, Field(ge=1, le=9)] = 3
    #: Build F_ℓ from the update's top singular triplet: ‖F − F_ℓ‖ and errors on F_ℓ.
    approximation: bool = True


class MeasureConfig(_Section):
    """What each step records besides the alignment (see ``giantstep.overlaps``)."""

    #: Also store the full ``M = W W*ᵀ`` (N × r) and ``Q = W Wᵀ`` (N × N) of every step.
    overlap_matrices: bool = False
    #: A direction is learned when its eigenvalue of ``M̂ᵀM̂/N`` exceeds this many times ``1/d``.
    learned_threshold: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0


class TheoryConfig(_Section):
    """Inputs of the predictions stored beside the measurements."""

    #: ``κ`` of ``n = Θ(d^κ)`` for the learned-subspace prediction; ``None`` derives it as
    #: ``round(log n / log d)`` (at least 1), which misreads e.g. ``n = 16d`` at small ``d``.
    batch_exponent: Annotated[int, Field(ge=1)] | None = None


class ExperimentConfig(_Section):
    """One experiment of SCIENCE.md §1–2. See the README for every key, its unit and default."""

    seed: Annotated[int, Field(ge=0)] = 0
    dim: PositiveInt = 1000
    width: PositiveInt = 1000
    preset: Literal["moniri", "dandi"] = "moniri"
    activation: str = "relu"
    target: TargetConfig = TargetConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    readout: ReadoutConfig = ReadoutConfig()
    test: TestConfig = TestConfig()
    compute: ComputeConfig = ComputeConfig()
    measure: MeasureConfig = MeasureConfig()
    theory: TheoryConfig = TheoryConfig()
    spectrum: SpectrumConfig = SpectrumConfig()

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str, info: ValidationInfo) -> str:
        from giantstep.activations import check_activation

        # Syntax only, never an import: a py: spec runs user code, so it needs the opt-in
        # allow_python (validation context); raises ValueError naming the accepted activations.
        check_activation(value, allow_python=bool((info.context or {}).get("allow_python")))
        return value

    @model_validator(mode="after")
    def _rank_fits_dim(self) -> ExperimentConfig:
        from giantstep.targets import parse_target

        rank = parse_target(self.target.expression).rank
        if rank > self.dim:
            raise ValueError(f"target.expression uses z{rank} but dim is {self.dim}")
        return self

    def batch_exponent(self) -> int:
        """``κ`` of ``n = Θ(d^κ)``: ``theory.batch_exponent``, else ``round(log n / log d)`` ≥ 1."""
        if self.theory.batch_exponent is not None:
            return self.theory.batch_exponent
        if self.dim < 2:
            return 1
        return max(1, round(math.log(self.train.batch_size) / math.log(self.dim)))

    def step_size(self) -> float:
        """``η = c · n^α · N^γN · d^γd`` for this config; raises ConfigError if not finite."""
        s = self.train.step_size
        try:
            eta = (
                s.scale
                * self.train.batch_size**s.batch_exponent
                * self.width**s.width_exponent
                * self.dim**s.dim_exponent
            )
        except OverflowError:
            eta = math.inf
        if not math.isfinite(eta):
            raise ConfigError(f"train.step_size: the step size η = {eta} is not finite")
        return eta


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg} (got {e.get('input')!r})")
    return "; ".join(lines)


def validate_config(data: dict[str, Any], *, allow_python: bool = False) -> ExperimentConfig:
    """A config from nested dicts (as TOML gives them); raises ConfigError naming the key.

    allow_python: accept ``activation = "py:module:function"``, whose module is imported (its
    code run) when the run starts; validation itself never imports it.
    """
    try:
        config = ExperimentConfig.model_validate(data, context={"allow_python": allow_python})
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    config.step_size()
    return config


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", value)``; the value is a TOML literal, else a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"``, creating tables as needed."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part} is not a table")
        node = child
    node[leaf] = value


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw tables of a TOML file; raises ConfigError on a syntax error."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path}: {err}") from None


def default_config_data() -> dict[str, Any]:
    """The tables of the built-in default experiment (``giantstep run`` with no file)."""
    text = resources.files("giantstep").joinpath("defaults/default.toml").read_text()
    return tomllib.loads(text)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    allow_python: bool = False,
) -> ExperimentConfig:
    """The config from ``path`` (or the built-in default) with ``key=value`` overrides applied.

    allow_python: as in :func:`validate_config` (``--allow-python``).
    """
    data = read_toml(path) if path is not None else default_config_data()
    for item in overrides:
        set_dotted(data, *parse_override(item))
    return validate_config(data, allow_python=allow_python)
