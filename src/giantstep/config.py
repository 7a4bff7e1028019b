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
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from giantstep.data import CHUNK_ROWS, Distribution, Dtype, SampleStream
from giantstep.errors import ConfigError
from giantstep.files import read_input
from giantstep.model import PRESETS, FirstLayerInit, SecondLayerInit
from giantstep.targets import check_noise, parse_target
from giantstep.train import Residual

PositiveInt = Annotated[int, Field(gt=0)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

# Limits that keep a valid config sane: validation stays instant, and a run that would take
# days (or allocate terabytes later) is refused before any work.
#: Rows of one sample set (10^10 rows of d = 1000 are 10^13 normal draws: days here).
MAX_SAMPLES = 10**10
#: Giant steps (the papers take one to a few).
MAX_STEPS = 1000
#: Ridge values of one readout.
MAX_RIDGE_VALUES = 1000


def at_most(limit: float, why: str) -> AfterValidator:
    """A validator refusing values above ``limit``, saying why the limit is there."""

    def check(value):
        if value > limit:
            raise ValueError(f"at most {limit:,} ({why})")
        return value

    return AfterValidator(check)


SampleCount = Annotated[
    int,
    Field(gt=0),
    at_most(MAX_SAMPLES, "10^10 rows of d = 1000 are 10^13 normal draws, days of work"),
]
#: The presets of ``giantstep.model.PRESETS``, as a type the validation can check.
PresetName = Literal[tuple(PRESETS)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class StepSizeConfig(_Section):
    """``η = scale · n^batch_exponent · N^width_exponent · d^dim_exponent``."""

    scale: FiniteFloat = 1.0
    batch_exponent: FiniteFloat = 0.0
    width_exponent: FiniteFloat = 0.0
    dim_exponent: FiniteFloat = 0.0


#: Epochs of full training at most (each is a pass over the batch).
MAX_EPOCHS = 10**6
#: Weight decay values tried by one full training (each is a training of its own).
MAX_WEIGHT_DECAYS = 20


class FullTrainingConfig(_Section):
    """``train.mode = "full"``: both layers trained jointly on the batch (``giantstep.fulltrain``).

    ``epochs`` is the most updates taken; training stops earlier when the objective has not
    fallen by a relative ``tolerance`` in ``patience`` epochs. Each ``weight_decay`` value is
    trained on the batch less its last ``validation_fraction`` and the one with the smallest
    validation error is kept.
    """

    optimizer: Literal["adam", "gd"] = "adam"
    learning_rate: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3
    epochs: Annotated[
        int, Field(ge=1), at_most(MAX_EPOCHS, "each epoch is a pass over the whole batch")
    ] = 1000
    patience: Annotated[int, Field(ge=1)] = 20
    tolerance: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 1e-4
    weight_decay: Annotated[
        list[Annotated[float, Field(ge=0, allow_inf_nan=False)]],
        Field(min_length=1, max_length=MAX_WEIGHT_DECAYS),
    ] = [0.0]
    validation_fraction: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)] = 0.0

    @field_validator("weight_decay", mode="before")
    @classmethod
    def _decay_list(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        return value

    @model_validator(mode="after")
    def _validation_to_choose(self) -> FullTrainingConfig:
        if len(self.weight_decay) > 1 and self.validation_fraction == 0:
            raise ValueError(
                f"validation_fraction = 0 cannot choose among {len(self.weight_decay)} "
                "weight_decay values: give a fraction in (0, 0.5] or a single value"
            )
        return self


class TrainConfig(_Section):
    """The giant steps: ``T`` steps on batches of ``n`` samples, residual ``y − f`` or ``y``.

    ``mode = "full"`` trains both layers instead (``train.full``); ``steps``, ``step_size``,
    ``residual`` and ``reuse_batch`` are then not used.
    """

    steps: Annotated[
        int, Field(ge=0), at_most(MAX_STEPS, "the theory is about one to a few giant steps")
    ] = 1
    batch_size: SampleCount = 4000
    step_size: StepSizeConfig = StepSizeConfig()
    residual: Residual = "y-f"
    reuse_batch: bool = False
    mode: Literal["steps", "full"] = "steps"
    full: FullTrainingConfig = FullTrainingConfig()

    @field_validator("full")
    @classmethod
    def _split_fits(cls, value: FullTrainingConfig, info) -> FullTrainingConfig:
        from giantstep.fulltrain import split_rows

        if "batch_size" in info.data:
            try:
                split_rows(info.data["batch_size"], value.validation_fraction)
            except ValueError as err:
                raise ValueError(str(err).removeprefix("train.full.")) from None
        return value


class TargetConfig(_Section):
    """The teacher ``y = g*(W* x) + ε``: ``g*`` as an expression in ``z1..zr``, ``σ_ε``."""

    expression: str = "z1 + He2(z1)/2"
    noise: Annotated[float, Field(ge=0, allow_inf_nan=False), AfterValidator(check_noise)] = 0.0
    #: Fraction ``p`` of labels replaced by labels drawn independently of x from the clean
    #: label distribution (``giantstep.corruption``); 0 leaves every label clean.
    corruption: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    #: ``W*``: Haar-random orthonormal rows, or the coordinate axes ``e_1 .. e_r``.
    directions: Literal["random", "coordinates"] = "random"

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_target(value)  # raises ValueError with the reason
        return value


class ModelConfig(_Section):
    """Overrides of the preset; ``None`` keeps the preset's choice."""

    output_scale: FiniteFloat | None = None
    first_layer: FirstLayerInit | None = None
    second_layer: SecondLayerInit | None = None


class DataConfig(_Section):
    """The inputs' distribution."""

    distribution: Distribution = "gaussian"


class ReadoutConfig(_Section):
    """The ridge set: its size and the ridge values ``λ`` fitted on it."""

    samples: SampleCount = 4000
    ridge: Annotated[
        list[Annotated[float, Field(gt=0, allow_inf_nan=False)]],
        Field(max_length=MAX_RIDGE_VALUES),
    ] = [1e-3, 1e-2, 1e-1]

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
    """The test set's size."""

    samples: SampleCount = 2000


class ComputeConfig(_Section):
    """How the arithmetic is done; changes the speed and memory, never the numbers' meaning."""

    dtype: Dtype = "float64"
    block_size: PositiveInt = 4096
    #: Bytes the run may use; ``None`` means the machine's available memory.
    memory_limit: PositiveInt | None = None

    @field_validator("block_size")
    @classmethod
    def _multiple_of_chunk(cls, value: int) -> int:
        if value % CHUNK_ROWS:
            raise ValueError(f"must be a positive multiple of {CHUNK_ROWS}")
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
    #: Add ``predicted_errors`` (``giantstep.theory.errors.predict_errors``: random features,
    #: the predicted spiked layer, the trained layer) to the result. Costs one N × N
    #: eigendecomposition, plus an N × N inverse per iteration for unequal neurons (seconds).
    errors: bool = False


class ExperimentConfig(_Section):
    """One experiment of SCIENCE.md §1–2. See the README for every key, its unit and default."""

    seed: Annotated[int, Field(ge=0)] = 0
    dim: PositiveInt = 1000
    width: PositiveInt = 1000
    preset: PresetName = "moniri"
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
        # Stripped: " relu" was kept as written, another run key for the same experiment.
        return check_activation(value, allow_python=bool((info.context or {}).get("allow_python")))

    @model_validator(mode="after")
    def _rank_fits_dim(self) -> ExperimentConfig:
        rank = parse_target(self.target.expression).rank
        if rank > self.dim:
            raise ValueError(f"target.expression: uses z{rank} but dim is {self.dim}")
        if self.train.mode == "full" and self.spectrum.enabled:
            raise ValueError(
                "spectrum.enabled: the spectrum and its band rule describe giant steps, not "
                "train.mode = 'full'"
            )
        if self.activation == "sign" and self.steps_taken():
            # Its jump is all of its slope: σ' = 0 wherever it is defined, so the gradient is
            # 0, while the theory's Stein constants (μ_1 = E[σ(g) g] = sqrt(2/π)) see a step.
            raise ValueError(
                "activation: sign has σ' = 0 wherever it is defined (its jump at 0 is its "
                "only slope), so a gradient step leaves the first layer where it is and the "
                "theory's step does not happen; use it without steps (train.steps = 0)"
            )
        return self

    def stream(self, kind: int, index: int = 0) -> SampleStream:
        """The samples of set ``(kind, index)`` of this experiment (``data.TRAIN`` batch ``t``,
        ``data.RIDGE``, ``data.TEST``), with its distribution and dtype."""
        return SampleStream(
            self.seed,
            (kind, index),
            self.dim,
            distribution=self.data.distribution,
            dtype=self.compute.dtype,
        )

    def steps_taken(self) -> int:
        """Updates of the first layer the run reports: ``train.steps``, or 1 for a fully
        trained network (its alignment has step 0 and step 1, after training)."""
        return 1 if self.train.mode == "full" else self.train.steps

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
        # A part that is empty or holds a dot is a quoted TOML key ("" = 1, "a.b" = 1): shown
        # quoted, as it was written, so that it reads as what it is.
        parts = [str(p) if str(p) and "." not in str(p) else f'"{p}"' for p in e["loc"]]
        key = ".".join(parts) or "config"
        if e["type"] == "extra_forbidden":
            dotted = any("." in str(p) for p in e["loc"])
            hint = " (a quoted key: write a dotted key unquoted, a.b = 1)" if dotted else ""
            lines.append(f"{key}: unknown key{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if isinstance(e.get("input"), dict):
                # A whole table's own check: its message names the keys; the table is no help.
                lines.append(f"{key}: {msg}" if e["loc"] else msg)
                continue
            got = repr(e.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."
            lines.append(f"{key}: {msg} (got {got})")
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
        raise ConfigError(f"override {item!r}: expected key=value")
    if not all(key.split(".")):
        raise ConfigError(f"override {item!r}: the key {key!r} has an empty part")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{key}: {err}") from None
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


#: Largest config or sweep file read (bytes): a config is a few lines; ``/dev/zero`` is not one.
MAX_CONFIG_BYTES = 1 << 20


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw tables of a TOML file.

    Raises ConfigError naming the file if it is missing, a folder, unreadable, larger than
    ``MAX_CONFIG_BYTES`` (an endless device included), not UTF-8 text or not valid TOML.
    """
    try:
        raw = read_input(path, MAX_CONFIG_BYTES)
    except TimeoutError as err:
        raise ConfigError(f"config file {path} is {err}") from None
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a TOML file") from None
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read it ({err.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config"
        )
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    except (tomllib.TOMLDecodeError, ValueError) as err:  # ValueError: a 5000-digit integer
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

    Parameters
    ----------
    path : str or Path, optional
        A TOML file of config tables; None is the built-in default experiment.
    overrides : sequence of str
        ``"dotted.key=value"`` items, the value a TOML literal (else a string), applied in order.
    allow_python : bool
        Accept ``py:module:function`` activations, which run that module's code (the CLI's
        ``--allow-python``); refused otherwise.

    Returns
    -------
    ExperimentConfig
        Validated.

    Raises
    ------
    ConfigError
        Naming the key and the accepted range, for a missing or malformed file, an unknown key
        or a bad value.

    Examples
    --------
    >>> config = load_config(overrides=["dim=200", "train.steps=2"])
    >>> config.dim, config.train.steps, config.activation
    (200, 2, 'relu')
    >>> load_config(overrides=["width=-3"])
    Traceback (most recent call last):
    ...
    giantstep.errors.ConfigError: width: Input should be greater than 0 (got -3)
    """
    data = read_toml(path) if path is not None else default_config_data()
    for item in overrides:
        set_dotted(data, *parse_override(item))
    return validate_config(data, allow_python=allow_python)
