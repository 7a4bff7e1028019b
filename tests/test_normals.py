"""giantstep.normals draws numpy's standard normals bit for bit: the same Philox words, the same
ziggurat, the same state carried from one fill to the next, both dtypes, every branch."""

import numpy as np
import pytest

from giantstep import normals
from giantstep._ziggurat import NOR_R
from giantstep.data import CHUNK_ROWS, DATA, SampleStream, generator, philox_key


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fills_are_numpys_draws_to_the_last_bit(dtype):
    tails = 0
    for seed in range(12):
        key = (seed, 7, seed * 3)
        numpy_rng = generator(*key)
        state = normals.philox_state(philox_key(*key))
        for size in (1, 3, 1001, 256 * 61, 5):  # odd sizes: the state carries a partial block
            want = numpy_rng.standard_normal(size, dtype=dtype)
            got = np.empty(size, dtype)
            normals.fill(*state, got)
            np.testing.assert_array_equal(got, want)
            tails += int(np.sum(np.abs(got) > NOR_R))
    big = np.empty((400, 1000), dtype)  # 4·10^5 draws: the wedge and tail branches, many times
    normals.fill(*normals.philox_state(philox_key(1, 2)), big)
    np.testing.assert_array_equal(big, generator(1, 2).standard_normal((400, 1000), dtype=dtype))
    tails += int(np.sum(np.abs(big) > NOR_R))
    assert tails > 20  # values beyond the ziggurat's base strip come from its tail branch only


def test_the_key_is_the_one_philox_derives_from_the_seed_sequence():
    for key in [(0,), (5, 1, 2), (2**40, 3)]:
        bit_generator = np.random.Philox(np.random.SeedSequence(key[0], spawn_key=key[1:]))
        np.testing.assert_array_equal(philox_key(*key), bit_generator.state["state"]["key"])
        assert not bit_generator.state["state"]["counter"].any()


def test_a_fill_refuses_what_it_cannot_fill_in_place():
    state = normals.philox_state(philox_key(0))
    with pytest.raises(ValueError, match="contiguous"):
        normals.fill(*state, np.empty((4, 6))[:, :3])
    with pytest.raises(ValueError, match="float64 or float32"):
        normals.fill(*state, np.empty(4, np.int64))


@pytest.mark.parametrize("distribution", ["gaussian", "sphere", "rademacher"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_streams_chunks_are_those_of_numpys_generator(distribution, dtype):
    """A chunk of rows is ``generator(seed, DATA, *key, chunk)``: its x, then its noise, drawn
    in float64 and rounded once for a float32 stream — the same samples in either dtype."""
    stream = SampleStream(4, (1, 2), 30, distribution=distribution, dtype=dtype)
    block = stream.rows(2 * CHUNK_ROWS, 4 * CHUNK_ROWS)
    for k, chunk in enumerate((2, 3)):
        rng = generator(4, DATA, 1, 2, chunk)
        if distribution == "rademacher":
            x = 2.0 * rng.integers(0, 2, size=(CHUNK_ROWS, 30), dtype=np.int8) - 1
        else:
            x = rng.standard_normal((CHUNK_ROWS, 30))
            if distribution == "sphere":
                x *= np.sqrt(30) / np.linalg.norm(x, axis=1, keepdims=True)
        noise = rng.standard_normal(CHUNK_ROWS)
        rows = slice(k * CHUNK_ROWS, (k + 1) * CHUNK_ROWS)
        np.testing.assert_array_equal(block.x[rows], x.astype(dtype))
        np.testing.assert_array_equal(block.noise[rows], noise.astype(dtype))


def test_a_float32_run_is_the_float64_run_rounded():
    """A float32 run drew numpy's float32 normals (another ziggurat): other samples, and test
    errors 6–11 % from the float64 run of the same seed. Now the same samples, rounded: the
    results agree to float32's precision."""
    import giantstep

    config = {"dim": 60, "width": 50, "activation": "tanh", "train": {"batch_size": 768},
              "readout": {"samples": 768}, "test": {"samples": 512}}  # fmt: skip
    double = giantstep.run(config)
    single = giantstep.run({**config, "compute": {"dtype": "float32"}})
    for a, b in zip(double.errors, single.errors, strict=True):
        assert b.test_error == pytest.approx(a.test_error, rel=1e-4)
        assert b.train_error == pytest.approx(a.train_error, rel=1e-4)
    assert single.alignment[1].update_cosine == pytest.approx(
        double.alignment[1].update_cosine, rel=1e-5
    )
