"""The learned-subspace measure: exact identities, basis independence and its 1/d baseline."""

import numpy as np
import pytest

from giantstep.alignment import direction_alignment, update_cosine
from giantstep.overlaps import (
    LEARNED_THRESHOLD,
    canonical_signs,
    learned_subspace,
    normalized_overlaps,
    overlaps,
    principal_cosines,
    same_subspace,
    summarize,
)
from giantstep.targets import teacher_directions


def random_layer(rng, width, dim):
    w = rng.standard_normal((width, dim))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def test_overlaps_and_summary_match_dense_sums():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((7, 11))
    star = teacher_directions(rng, 3, 11)
    m, q = overlaps(w, star)
    for j in range(7):
        for k in range(3):
            assert m[j, k] == pytest.approx(sum(w[j, i] * star[k, i] for i in range(11)), abs=1e-12)
    np.testing.assert_allclose(q, w @ w.T, atol=1e-12)
    s = summarize(m, q)
    np.testing.assert_allclose(s.m_rms, np.sqrt((m**2).mean(axis=0)), atol=1e-12)
    assert s.q_diagonal_mean == pytest.approx(np.mean(np.sum(w**2, axis=1)), abs=1e-12)
    off = [q[a, b] ** 2 for a in range(7) for b in range(7) if a != b]
    assert s.q_offdiagonal_rms == pytest.approx(np.sqrt(np.mean(off)), abs=1e-12)
    # Normalised overlaps are cosines.
    cos = normalized_overlaps(w, star)
    np.testing.assert_allclose(cos, m / np.linalg.norm(w, axis=1, keepdims=True), atol=1e-12)


def test_measure_does_not_depend_on_the_basis_of_the_target_coordinates():
    rng = np.random.default_rng(1)
    star = teacher_directions(rng, 3, 40)
    w = random_layer(rng, 30, 40) + 2.0 * rng.standard_normal((30, 1)) * (star[0] + star[2])
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    a = learned_subspace(w, star)
    b = learned_subspace(w, rotation @ star)  # the same subspace, other coordinates
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, atol=1e-12)
    # Eigenvectors rotate with the coordinates: v -> R v.
    assert a.dimension == b.dimension == 1
    np.testing.assert_allclose(
        np.abs(a.learned @ rotation.T @ b.learned.T), np.ones((1, 1)), atol=1e-10
    )


def test_a_population_along_z1_plus_z2_has_learned_one_direction():
    rng = np.random.default_rng(2)
    dim, width = 300, 200
    star = teacher_directions(rng, 2, dim)
    along = (star[0] + star[1]) / np.sqrt(2)
    w = random_layer(rng, width, dim) * 0.2 + rng.choice([-1.0, 1.0], (width, 1)) * along
    # Per coordinate, both look learned ...
    assert np.all(direction_alignment(w, star) > 0.6)
    # ... but there is one direction: one large eigenvalue, eigenvector ∝ (1, 1)/sqrt(2).
    s = learned_subspace(w, star)
    assert s.dimension == 1
    assert s.eigenvalues[0] > 0.9
    assert s.eigenvalues[1] < 2 / dim
    np.testing.assert_allclose(s.learned[0], [2**-0.5, 2**-0.5], atol=1e-2)


@pytest.mark.parametrize("dim", [200, 800])
def test_random_initialisation_sits_at_one_over_d(dim):
    rng = np.random.default_rng(dim)
    star = teacher_directions(rng, 3, dim)
    # Random directions with norms spread over 0.2..3: the measure uses the cosines only, so
    # the baseline is 1/d whatever the norms (with M = W W*ᵀ it would be E[‖w‖²]/d ≈ 3.2/d).
    w = random_layer(rng, 4000, dim) * rng.uniform(0.2, 3.0, (4000, 1))
    s = learned_subspace(w, star)
    # E[M̂ᵀM̂/N] = I/d; fluctuations ~ 2 sqrt(r/N)/d.
    np.testing.assert_allclose(s.eigenvalues * dim, 1.0, atol=0.2)
    assert s.threshold == pytest.approx(LEARNED_THRESHOLD / dim)
    assert s.dimension == 0
    assert learned_subspace(random_layer(rng, 50, dim), star, factor=0.5).dimension == 3


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        learned_subspace(np.ones((2, 3)), np.eye(3)[:1], factor=0.0)


def test_subspace_comparison():
    e = np.eye(3)
    assert same_subspace(e[:2], np.array([[1, 1, 0], [1, -1, 0]]) / np.sqrt(2))
    assert not same_subspace(e[:2], e[1:])
    assert not same_subspace(e[:1], e[:2])
    assert same_subspace(np.zeros((0, 3)), [])
    np.testing.assert_allclose(principal_cosines(e[:1], np.array([[1.0, 1.0, 0.0]])), [2**-0.5])
    flipped = canonical_signs(np.array([[0.1, -0.2], [-0.9, 0.05]]))
    np.testing.assert_allclose(flipped, [[-0.1, 0.2], [0.9, -0.05]])


def test_update_cosine_of_a_rank_one_update_against_a_direction_of_any_norm():
    """``|cos(v, β)|`` for ``update = s u vᵀ``: hand-built so that the cosine is 0.6 exactly."""
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.standard_normal((9, 2)))
    v, other = basis.T
    u = rng.standard_normal(5)
    direction = 3.0 * (0.6 * v + 0.8 * other)  # norm 3: the cosine must not scale with it
    for scale in (1.0, 1e200):  # a diverging update has the same direction
        assert update_cosine(scale * np.outer(u, v), direction) == pytest.approx(0.6, rel=1e-12)
    assert update_cosine(np.outer(u, -v), -direction) == pytest.approx(0.6, rel=1e-12)
    # No update has no direction: its cosine with anything is 0, not that of an arbitrary vector.
    assert update_cosine(np.zeros((5, 9)), direction) == 0.0
