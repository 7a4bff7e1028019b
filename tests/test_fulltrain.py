"""train.mode = "full": both layers trained jointly, streamed, validated like every key."""

import numpy as np
import pytest

import giantstep
from giantstep.config import ConfigError, validate_config
from giantstep.data import TRAIN, SampleStream
from giantstep.fulltrain import FullGradientSum, LossAndGradients, split_rows
from giantstep.model import initialize
from giantstep.reduction import reduce_blocks
from giantstep.targets import Teacher
from giantstep.train import DivergenceError


def full(**settings):
    return {
        "dim": 20, "width": 16, "activation": "tanh",
        "train": {"mode": "full", "batch_size": 1024, "full": settings},
        "readout": {"samples": 512, "ridge": [0.01]}, "test": {"samples": 512},
    }  # fmt: skip


def test_streamed_gradients_match_the_dense_ones():
    net = initialize(1, 16, 20, activation="tanh")
    teacher = Teacher.draw(1, "z1 + He2(z1)/2", 20, noise=0.1)
    stream = SampleStream(1, (TRAIN, 0), 20)
    summand = FullGradientSum(net.first_layer, net.second_layer, 1.0, net.activation, teacher)
    sums = [reduce_blocks(summand, stream, 1000, b) for b in (256, 768)]
    block = stream.rows(0, 1000)
    _, y = teacher.labels(block)
    pre = block.x @ net.first_layer.T
    r = y - np.tanh(pre) @ net.second_layer
    dense_w = ((1 - np.tanh(pre) ** 2) * r[:, None] * net.second_layer).T @ block.x
    for total in sums:
        assert isinstance(total, LossAndGradients)
        np.testing.assert_allclose(total.first_layer, dense_w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(total.second_layer, np.tanh(pre).T @ r, rtol=1e-10)
        assert total.sum_sq == pytest.approx(r @ r, rel=1e-12)


@pytest.mark.parametrize("optimizer, rate", [("adam", 0.02), ("gd", 0.5)])
def test_training_lowers_the_loss_and_reports_its_curve(optimizer, rate):
    result = giantstep.run(full(optimizer=optimizer, learning_rate=rate, epochs=150))
    f = result.full_training
    assert f.loss_curve[-1] < 0.5 * f.loss_curve[0]
    assert len(f.loss_curve) == f.epochs + 1 and f.train_rows == 1024
    assert [a.step for a in result.alignment] == [0, 1]
    assert result.predicted_update_cosine is None


def test_weight_decay_is_chosen_on_the_validation_rows():
    result = giantstep.run(
        full(learning_rate=0.02, epochs=60, weight_decay=[0.0, 10.0], validation_fraction=0.25)
    )
    f = result.full_training
    assert (f.train_rows, f.validation_rows) == (768, 256)
    errors = [c.validation_error for c in f.candidates]
    assert f.weight_decay == [0.0, 10.0][int(np.argmin(errors))] == 0.0
    assert len(f.validation_curve) == len(f.loss_curve)


def test_a_diverging_training_says_its_epoch():
    with pytest.raises(DivergenceError, match="epoch"):
        giantstep.run({**full(optimizer="gd", learning_rate=1e3, epochs=200), "activation": "relu"})


def test_adam_with_squared_gradients_past_overflow_diverges_instead_of_freezing():
    """weight_decay = 1e160 overflowed Adam's second moment: its steps m/sqrt(v) were 0, the
    weights froze, and the training reported converged."""
    message = r"Adam's squared gradients are not finite \(lower train.full.weight_decay\)"
    with pytest.raises(DivergenceError, match=message):
        giantstep.run(full(optimizer="adam", weight_decay=[1e160], epochs=50))


def test_the_split_falls_on_whole_chunks():
    assert split_rows(4000, 0.2) == (3072, 928)
    with pytest.raises(ValueError):
        split_rows(300, 0.2)
    # The fraction as written: (1 - 0.34) * 12800 is 33 chunks exactly, 32.99... in floats.
    assert split_rows(12800, 0.34) == (8448, 4352)
    assert split_rows(19200, 0.32) == (13056, 6144)
    assert split_rows(2560, 0.5) == (1280, 1280)  # an exact half stays exact


@pytest.mark.parametrize(
    "settings, key",
    [({"learning_rate": 0}, "learning_rate"), ({"optimizer": "sgd"}, "optimizer"),
     ({"epochs": 0}, "epochs"), ({"weight_decay": [-1.0]}, "weight_decay"),
     ({"weight_decay": [0.0, 1.0]}, "validation_fraction"),
     ({"validation_fraction": 0.9}, "validation_fraction")],
)  # fmt: skip
def test_bad_values_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        validate_config({"train": {"full": settings}})


def test_mode_and_spectrum_are_checked():
    with pytest.raises(ConfigError, match="train.mode"):
        validate_config({"train": {"mode": "fully"}})
    with pytest.raises(ConfigError, match="spectrum.enabled"):
        validate_config({"train": {"mode": "full"}, "spectrum": {"enabled": True}})


def test_the_command_line_names_a_bad_full_training_key_and_exits_2():
    from click.testing import CliRunner

    from giantstep.cli import main

    result = CliRunner().invoke(
        main, ["run", "--set", "train.mode=full", "--set", "train.full.learning_rate=-1"]
    )
    assert result.exit_code == 2
    assert "train.full.learning_rate" in result.output
