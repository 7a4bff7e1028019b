"""Bad input to the library gets the same clear errors as the CLI: ValueError naming the
argument and the values it accepts, never a bare KeyError."""

import pytest

import giantstep
from giantstep.data import SampleStream
from giantstep.model import initial_first_layer, initial_second_layer, initialize
from giantstep.store import Store
from giantstep.sweep import parse_sweep, run_sweep


def test_a_wrong_preset_names_the_argument_and_the_presets():
    with pytest.raises(ValueError, match=r"preset: unknown 'mean_field'; one of moniri, dandi"):
        initialize(0, 4, 3, activation="relu", preset="mean_field")
    with pytest.raises(giantstep.ConfigError, match="preset"):
        giantstep.run({"preset": "mean_field"})


def test_a_wrong_activation_names_the_accepted_forms():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; use one of: tanh, relu"):
        initialize(0, 4, 3, activation="swish")


def test_wrong_initialisations_name_the_argument():
    with pytest.raises(
        ValueError, match=r"first_layer: unknown 'uniform'; one of sphere, gaussian"
    ):
        initial_first_layer(0, 4, 3, "uniform")
    with pytest.raises(ValueError, match=r"second_layer: unknown 'zeros'; one of gaussian, signs"):
        initial_second_layer(0, 4, "zeros")


def test_a_wrong_distribution_or_dtype_names_the_argument():
    with pytest.raises(ValueError, match=r"distribution: unknown 'cauchy'; one of gaussian"):
        SampleStream(0, (0,), 3, distribution="cauchy")
    with pytest.raises(ValueError, match=r"dtype: 'int8' is not one of float64, float32"):
        SampleStream(0, (0,), 3, dtype="int8")


def test_a_wrong_executor_names_the_argument(tmp_path):
    config = {"dim": 8, "width": 4, "train": {"batch_size": 256}, "readout": {"samples": 256},
              "test": {"samples": 256}}  # fmt: skip
    with pytest.raises(ValueError, match=r"executor: expected None .* got str"):
        giantstep.run(config, executor="processes")
    sweep = parse_sweep({"base": config, "grid": {"seed": [0]}})
    with Store(tmp_path / "r.sqlite") as store, pytest.raises(ValueError, match="executor"):
        run_sweep(sweep, store, executor="processes")


@pytest.mark.parametrize(
    "section, key, value, message",
    [("readout", "ridge", [-0.05], "readout.ridge.0: Input should be greater than 0"),
     ("train", "steps", -1, "train.steps: Input should be greater than or equal to 0"),
     ("compute", "block_size", 0, "compute.block_size: Input should be greater than 0")],
)  # fmt: skip
def test_a_config_changed_after_validation_is_checked_again_by_run(section, key, value, message):
    """A ridge of -0.05 set on a validated config ran and was reported; steps = -1 ran as 0
    steps; block_size = 0 raised ZeroDivisionError."""
    sizes = ["dim=30", "width=20", "train.batch_size=512", "readout.samples=512"]
    sizes.append("test.samples=256")
    config = giantstep.load_config(overrides=sizes)
    setattr(getattr(config, section), key, value)
    with pytest.raises(giantstep.ConfigError, match=message):
        giantstep.run(config)


def test_sign_is_refused_where_a_step_should_move_it():
    """sign's σ' is 0 wherever it is defined: the run's step left W where it was, while the
    error theory's constants (μ_1 = sqrt(2/π)) predicted a step — 32 % below the simulation."""
    small = {"dim": 20, "width": 8, "activation": "sign"}
    with pytest.raises(giantstep.ConfigError, match="activation: sign has σ' = 0"):
        giantstep.load_config(overrides=[f"{k}={v!r}".replace("'", '"') for k, v in small.items()])
    with pytest.raises(giantstep.ConfigError, match="activation: sign"):
        giantstep.run({**small, "train": {"mode": "full"}})
    config = giantstep.load_config(overrides=["dim=20", "width=8", 'activation="sign"',
                                              "train.steps=0"])  # fmt: skip
    assert config.activation == "sign"  # random features: no step to take


def test_small_library_calls_say_what_is_wrong_instead_of_failing_deep_inside():
    """Each raised a TypeError, ZeroDivisionError or AttributeError from inside, returned
    NaN, or left a sum half-added."""
    import numpy as np

    from giantstep.activations import get_activation
    from giantstep.overlaps import learned_subspace
    from giantstep.readout import GramStatistics
    from giantstep.theory.learnable import predict
    from giantstep.theory.spikes import direction_cosine

    for kappa, steps in ((1.5, 1), (float("nan"), 1), (1, 2.0), (1, None)):
        with pytest.raises(ValueError, match="must be an integer"):
            predict("z1", kappa, steps)
    with pytest.raises(ValueError, match="dim and n must be > 0"):
        direction_cosine(1.0, 1.0, 10, 0)
    assert direction_cosine(0.0, 0.0, 10, 5) == 0.0  # y ≡ 0: no direction
    for name in ("relu", "erf", "gelu", "leaky_relu", "tanh", "poly(0.5, 1)", "abs"):
        activation = get_activation(name)
        assert float(activation.derivative(0.5)) == float(activation.derivative(np.array([0.5]))[0])
        assert activation(np.array([1, 2])).dtype == np.float64
        np.testing.assert_array_equal(
            activation(np.array([1, 2])), activation(np.array([1.0, 2.0]))
        )
    assert get_activation("tanh").value_and_derivative(np.float32(0.5))[1].dtype == np.float32
    first_layer = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # a zero row: cosine 0, not NaN
    np.testing.assert_allclose(learned_subspace(first_layer, np.eye(3)[:1]).eigenvalues, [0.5])
    for factor in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"finite and > 0, got {factor}"):
            learned_subspace(first_layer, np.eye(3)[:1], factor)
    stats = GramStatistics.zeros(3)
    with pytest.raises(ValueError, match=r"got \(4, 3\) and \(5,\)"):
        stats.add(np.ones((4, 3)), np.ones(5))
    assert not stats.gram.any() and stats.count == 0


def test_an_activation_written_with_spaces_is_the_same_experiment():
    """' relu' was kept as written: another run key, so a sweep reran the same experiment."""
    from giantstep.config import validate_config
    from giantstep.store import run_key

    spaced = validate_config({"activation": " relu ", "dim": 12, "width": 8})
    plain = validate_config({"activation": "relu", "dim": 12, "width": 8})
    assert spaced.activation == "relu" and run_key(spaced) == run_key(plain)
