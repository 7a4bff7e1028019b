"""Independent references for the tests: the formulas of SCIENCE.md written out on whole
matrices in plain numpy, sharing no code with giantstep (only the rows of its streams).

Each function says which formula it is. The losses are the definitions; the gradients are
checked against finite differences and complex steps of the losses in test_math_training.py,
so a test that compares giantstep with them compares it with the mathematics.
"""

import numpy as np

from giantstep.data import SampleStream

#: σ and σ' written out here, not taken from giantstep.activations. Each σ accepts complex
#: arguments (complex-step derivatives need it) except softplus.
SIGMA = {
    "tanh": (np.tanh, lambda z: 1 / np.cosh(z) ** 2),
    "sin": (np.sin, np.cos),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "softplus": (lambda z: np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0),
                 lambda z: 1 / (1 + np.exp(-z))),
    # poly(0.5, 1, -0.3, 0.2) = 0.5 + z − 0.3 z² + 0.2 z³
    "poly(0.5, 1, -0.3, 0.2)": (lambda z: 0.5 + z - 0.3 * z**2 + 0.2 * z**3,
                                lambda z: 1 - 0.6 * z + 0.6 * z**2),
}  # fmt: skip

#: Target expressions used by the tests, written out: h (rows, r) -> (rows,).
TARGETS = {
    "z1 + z1*z2": lambda h: h[:, 0] + h[:, 0] * h[:, 1],
    "z1 + He2(z1)/2": lambda h: h[:, 0] + (h[:, 0] ** 2 - 1) / 2,
    "tanh(z1)": lambda h: np.tanh(h[:, 0]),
}


def rows(stream: SampleStream, n: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, d) and the standard normal noise (n,) of rows 0..n of a stream, as copies."""
    block = stream.rows(0, n)
    return block.x.copy(), block.noise.copy()


def labels(x, noise, directions, expression, noise_level):
    """``y = g*(x W*ᵀ) + σ_ε ε``."""
    return TARGETS[expression](x @ directions.T) + noise_level * noise


def output(w, a, s, x, activation):
    """``f(x) = s Σ_j a_j σ(⟨w_j, x⟩)``: (rows,)."""
    sigma, _ = SIGMA[activation]
    return s * (sigma(x @ w.T) @ a)


def squared_loss_of_output(f, y):
    """``(1/2n) ‖y − f‖²`` per column of f (n, …) (no conjugate: complex steps need it analytic)."""
    r = (y - f.T).T
    return np.sum(r * r, axis=0) / (2 * len(y))


def correlation_loss_of_output(f, y):
    """``−(1/n) yᵀ f`` per column of f: the loss whose gradient is residual ``"y"``'s."""
    return -(y @ f) / len(y)


LOSSES_OF_OUTPUT = {"y-f": squared_loss_of_output, "y": correlation_loss_of_output}


def loss(w, a, s, x, y, activation, residual):
    """``L(W) = (1/2n) ‖y − f_W(X)‖²`` (residual ``"y-f"``) or ``−(1/n) yᵀ f_W(X)`` (``"y"``)."""
    return LOSSES_OF_OUTPUT[residual](output(w, a, s, x, activation), y)


def gradient(w, a, s, x, y, activation, residual):
    """``∇_W L = −(s/n) [σ'(X Wᵀ) ⊙ (r aᵀ)]ᵀ X``, ``r = y − f`` or ``y`` (SCIENCE.md §2)."""
    _, slope = SIGMA[activation]
    r = y - output(w, a, s, x, activation) if residual == "y-f" else y
    return -(s / len(y)) * (slope(x @ w.T) * np.outer(r, a)).T @ x


def complex_step_gradient(w, a, s, x, y, activation, residual, step=1e-30):
    """Every entry of ``∂L/∂W`` as ``Im L(W + i h E_jk)/h``: exact to rounding (no difference
    of two nearly equal numbers) for an analytic σ. ``w_jk`` enters f only through
    ``⟨w_j, x⟩``, so the shifted outputs of row j (all k at once) are
    ``f + s a_j (σ(⟨w_j, x⟩ + i h x_k) − σ(⟨w_j, x⟩))``."""
    sigma, _ = SIGMA[activation]
    pre = x @ w.T
    f = s * (sigma(pre) @ a)
    of_output = LOSSES_OF_OUTPUT[residual]
    grad = np.empty_like(w)
    for j in range(w.shape[0]):
        shifted = sigma(pre[:, j, None] + 1j * step * x) - sigma(pre[:, j, None])
        grad[j] = of_output(f[:, None] + s * a[j] * shifted, y).imag / step
    return grad


def ridge(features, y, lam):
    """``â = argmin (1/m)‖y − F a‖² + λ‖a‖²`` from the normal equations
    ``(FᵀF/m + λ I) â = Fᵀy/m``, solved directly."""
    m, width = features.shape
    return np.linalg.solve(features.T @ features / m + lam * np.eye(width), features.T @ y / m)


def subspace_matrix(w, directions):
    """``S = M̂ᵀM̂/N`` summed neuron by neuron: ``(1/N) Σ_j c_j c_jᵀ`` with ``c_j`` the cosines
    of ``w_j`` with the rows of ``W*`` (r,)."""
    total = np.zeros((len(directions), len(directions)))
    for row in w:
        norm = np.linalg.norm(row)
        cosines = np.array([row @ v / (norm * np.linalg.norm(v)) for v in directions])
        total += np.outer(cosines, cosines)
    return total / len(w)
