"""Corrupted labels (target.corruption) and coordinate teacher directions (target.directions)."""

import numpy as np
import pytest

import giantstep
from giantstep.config import ConfigError, validate_config
from giantstep.corruption import corrupted_mask
from giantstep.data import RIDGE, TEST, TRAIN, SampleStream
from giantstep.targets import Teacher

DIM = 40


def labels(teacher, stream, n, block_size):
    return np.concatenate([teacher.labels(b)[1].copy() for b in stream.blocks(n, block_size)])


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher", "sphere"])
def test_corrupted_labels_do_not_depend_on_the_block_size(distribution):
    teacher = Teacher.draw(1, "z1 + He2(z1)/2", DIM, noise=0.1, corruption=0.4)
    stream = SampleStream(1, (TRAIN, 2), DIM, distribution=distribution)
    reference = labels(teacher, stream, 1800, 256)
    for block_size in (512, 2048):
        np.testing.assert_array_equal(labels(teacher, stream, 1800, block_size), reference)
    # The first rows of a longer set are the rows of a shorter one (samples shared across n).
    np.testing.assert_array_equal(labels(teacher, stream, 700, 512), reference[:700])


def test_corruption_is_reproducible_and_keyed_by_stream_and_seed():
    teacher = Teacher.draw(0, "z1", DIM, corruption=0.5)
    a = labels(teacher, SampleStream(0, (TRAIN, 0), DIM), 1024, 256)
    b = labels(
        Teacher.draw(0, "z1", DIM, corruption=0.5), SampleStream(0, (TRAIN, 0), DIM), 1024, 256
    )
    np.testing.assert_array_equal(a, b)
    masks = [corrupted_mask(SampleStream(s, k, DIM), 0, 4096, 0.5) for s, k in
             [(0, (TRAIN, 0)), (0, (TRAIN, 1)), (1, (TRAIN, 0)), (0, (RIDGE, 0))]]  # fmt: skip
    for i in range(len(masks)):
        for j in range(i):
            assert 0.4 < np.mean(masks[i] == masks[j]) < 0.6  # independent coins


def test_corrupted_labels_keep_the_clean_label_distribution():
    clean = Teacher.draw(0, "z1 + He2(z1)/2", DIM)
    corrupt = Teacher.draw(0, "z1 + He2(z1)/2", DIM, corruption=0.3)
    stream = SampleStream(0, (TRAIN, 0), DIM)
    n = 40_000
    x = np.concatenate([b.x @ clean.directions[0] for b in stream.blocks(n, 4096)])
    y_clean, y = labels(clean, stream, n, 4096), labels(corrupt, stream, n, 4096)
    changed = y != y_clean
    assert abs(changed.mean() - 0.3) < 0.01
    assert abs(np.mean(y**2) - 1.5) < 0.05  # E[y²] is that of the clean labels
    # ζ's signal shrinks by (1 − p): E[y x·β] = (1 − p) μ_1(σ*).
    assert abs(np.mean(y * x) - 0.7) < 0.03
    assert abs(np.corrcoef(y[changed], x[changed])[0, 1]) < 0.03


def test_the_test_set_is_never_corrupted():
    clean = Teacher.draw(0, "z1", DIM)
    corrupt = Teacher.draw(0, "z1", DIM, corruption=1.0)
    stream = SampleStream(0, (TEST, 0), DIM)
    np.testing.assert_array_equal(
        labels(corrupt, stream, 600, 256), labels(clean, stream, 600, 256)
    )


def small(**target):
    return {
        "dim": 100, "width": 100, "target": target,
        "train": {"batch_size": 1024, "residual": "y",
                  "step_size": {"scale": 2.0, "batch_exponent": 0.3}},
        "readout": {"samples": 512, "ridge": [0.01]}, "test": {"samples": 512},
    }  # fmt: skip


def test_zero_corruption_is_the_plain_run():
    plain = giantstep.run(small()).model_dump()
    zero = giantstep.run(small(corruption=0.0)).model_dump()
    for key in ("errors", "alignment", "predicted_update_cosine"):
        assert plain[key] == zero[key]


def test_fully_corrupted_labels_teach_no_direction():
    for seed in range(3):
        result = giantstep.run({**small(corruption=1.0), "seed": seed})
        assert abs(result.alignment[1].update_cosine) < 3 / np.sqrt(100)
        assert result.predicted_update_cosine == 0.0


def test_coordinate_directions_are_the_axes():
    teacher = Teacher.draw(0, "z1 + z1*z2", 7, directions="coordinates")
    np.testing.assert_array_equal(teacher.directions, np.eye(2, 7))


@pytest.mark.parametrize(
    "key, value",
    [("corruption", -0.1), ("corruption", 1.5), ("corruption", float("nan")),
     ("corruption", "half"), ("directions", "sparse")],
)  # fmt: skip
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"target.{key}"):
        validate_config({"target": {key: value}})
