"""The learned subspace against hand-built cases and a neuron-by-neuron sum, on rows of
unequal norms (where M = W W*ᵀ and the normalised M̂ differ)."""

import numpy as np
import pytest

from dense import subspace_matrix
from giantstep.overlaps import learned_subspace
from giantstep.targets import teacher_directions


def test_hand_built_population():
    """Three neurons along W*_1 with norm 5, one along W*_2 with norm 0.1, one at cosine 0.6
    with W*_1 (norm 2): M̂ᵀM̂/N = diag(3 + 0.36, 1)/5 = diag(0.672, 0.2) whatever the norms
    (the raw MᵀM/N would be diag(15.3, 0.002)). Threshold factor/d: at d = 60, 10/d = 1/6
    keeps both directions, 20/d = 1/3 only the first."""
    rng = np.random.default_rng(0)
    dim = 60
    star = teacher_directions(rng, 2, dim)
    other = rng.standard_normal(dim)
    other -= star.T @ (star @ other)
    other /= np.linalg.norm(other)
    w = np.array([5 * star[0]] * 3 + [0.1 * star[1], 2 * (0.6 * star[0] + 0.8 * other)])
    s = learned_subspace(w, star)
    np.testing.assert_allclose(s.eigenvalues, [0.672, 0.2], atol=1e-12)
    np.testing.assert_allclose(np.abs(s.eigenvectors), np.eye(2), atol=1e-12)
    assert s.threshold == pytest.approx(10 / dim) and s.dimension == 2
    np.testing.assert_allclose(np.abs(s.learned), np.eye(2), atol=1e-12)
    strict = learned_subspace(w, star, factor=20.0)
    assert strict.threshold == pytest.approx(20 / dim) and strict.dimension == 1
    np.testing.assert_allclose(np.abs(strict.learned), [[1.0, 0.0]], atol=1e-12)
    # The second eigenvalue, 0.2 = 12/d, sits between 11.5/d and 12.5/d.
    assert learned_subspace(w, star, factor=11.5).dimension == 2
    assert learned_subspace(w, star, factor=12.5).dimension == 1


def test_eigen_decomposition_equals_the_sum_over_neurons():
    """Eigenvalues and eigenvectors of M̂ᵀM̂/N against (1/N) Σ_j c_j c_jᵀ built neuron by
    neuron, for a population with a learned direction and norms spread over 50×."""
    rng = np.random.default_rng(1)
    width, dim = 80, 50
    star = teacher_directions(rng, 3, dim)
    along = (star[0] - 2 * star[2]) / np.sqrt(5)
    w = rng.standard_normal((width, dim)) / np.sqrt(dim) + rng.standard_normal((width, 1)) * along
    w *= rng.uniform(0.1, 5.0, (width, 1))
    s = learned_subspace(w, star)
    values, vectors = np.linalg.eigh(subspace_matrix(w, star))
    np.testing.assert_allclose(s.eigenvalues, values[::-1], rtol=1e-10)
    np.testing.assert_allclose(np.abs(s.eigenvectors), np.abs(vectors[:, ::-1]), atol=1e-9)
    # The learned direction is (1, 0, −2)/√5 in target coordinates.
    assert s.dimension == 1
    assert abs(s.learned[0] @ [1, 0, -2]) / np.sqrt(5) > 0.99
