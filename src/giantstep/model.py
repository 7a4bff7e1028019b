"""The two-layer network ``f(x) = s · Σ_j a_j σ(⟨w_j, x⟩)``: presets, initialisation, forward."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from giantstep.activations import Activation, get_activation
from giantstep.data import FIRST_LAYER, SECOND_LAYER, generator, standard_normals

#: First-layer initialisations (the config's ``model.first_layer``).
FirstLayerInit = Literal["sphere", "gaussian"]
#: Second-layer initialisations (the config's ``model.second_layer``).
SecondLayerInit = Literal["gaussian", "signs", "ones"]


@dataclass(frozen=True)
class Preset:
    """Initialisation of a paper. ``output_scale`` is ``s`` as a function of the width ``N``."""

    first_layer: FirstLayerInit
    second_layer: SecondLayerInit
    mean_field: bool  # s = 1/N if True, else s = 1

    def output_scale(self, width: int) -> float:
        """``s``: ``1/N`` for a mean-field preset, else 1."""
        return 1.0 / width if self.mean_field else 1.0


#: SCIENCE.md §1. moniri: s = 1, w_j ~ Unif(S^{d-1}), a_j ~ N(0, 1/N).
#: dandi: s = 1/N, w_j ~ Unif(S^{d-1}), a_j = ±1, half each.
PRESETS: dict[str, Preset] = {
    "moniri": Preset(first_layer="sphere", second_layer="gaussian", mean_field=False),
    "dandi": Preset(first_layer="sphere", second_layer="signs", mean_field=True),
}


@dataclass(frozen=True)
class TwoLayerNetwork:
    """first_layer: (N, d) rows ``w_j``; second_layer: (N,) ``a``; output_scale: ``s``."""

    first_layer: np.ndarray
    second_layer: np.ndarray
    output_scale: float
    activation: Activation

    @property
    def width(self) -> int:
        """``N``, the number of hidden units."""
        return self.first_layer.shape[0]

    @property
    def dim(self) -> int:
        """``d``, the input dimension."""
        return self.first_layer.shape[1]

    def features(self, x: np.ndarray) -> np.ndarray:
        """``σ(x Wᵀ)``: (rows, N) for x (rows, d), in x's dtype."""
        return self.activation(x @ self.first_layer.T.astype(x.dtype, copy=False))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``f(x)``: (rows,) for x (rows, d)."""
        return self.output_scale * (self.features(x) @ self.second_layer.astype(x.dtype))

    def with_first_layer(self, first_layer: np.ndarray) -> TwoLayerNetwork:
        """The same network with first layer (N, d) replaced."""
        return replace(self, first_layer=first_layer)


def _check(argument: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{argument}: unknown {value!r}; one of {', '.join(accepted)}")


def initial_first_layer(seed: int, width: int, dim: int, kind: FirstLayerInit) -> np.ndarray:
    """(N, d): rows uniform on the unit sphere, or i.i.d. ``N(0, 1/d)`` entries."""
    _check("first_layer", kind, get_args(FirstLayerInit))
    w = standard_normals((width, dim), seed, FIRST_LAYER)
    if kind == "sphere":
        return w / np.linalg.norm(w, axis=1, keepdims=True)
    return w / np.sqrt(dim)


def initial_second_layer(seed: int, width: int, kind: SecondLayerInit) -> np.ndarray:
    """(N,): ``N(0, 1/N)`` entries, ``±1`` half each (the extra one ``+1`` for odd N), or ones."""
    _check("second_layer", kind, get_args(SecondLayerInit))
    if kind == "gaussian":
        return generator(seed, SECOND_LAYER).standard_normal(width) / np.sqrt(width)
    if kind == "signs":
        return np.where(np.arange(width) < (width + 1) // 2, 1.0, -1.0)
    return np.ones(width)


def initialize(
    seed: int,
    width: int,
    dim: int,
    *,
    activation: Activation | str,
    preset: str = "moniri",
    output_scale: float | None = None,
    first_layer: FirstLayerInit | None = None,
    second_layer: SecondLayerInit | None = None,
) -> TwoLayerNetwork:
    """The network at initialisation: the preset's choices, each overridable.

    Parameters
    ----------
    seed : int
        Selects the draws (the first and second layers have generators of their own).
    width, dim : int
        ``N`` and ``d``.
    activation : Activation or str
        ``σ``, or its name (``giantstep.activations.get_activation``).
    preset : {"moniri", "dandi"}
        SCIENCE.md §1: ``moniri`` (s = 1, rows on the sphere, ``a ~ N(0, 1/N)``) or ``dandi``
        (s = 1/N, rows on the sphere, ``a = ±1``).
    output_scale, first_layer, second_layer : optional
        Override the preset's ``s`` and initialisations.

    Returns
    -------
    TwoLayerNetwork

    Raises
    ------
    ValueError
        Naming the argument, for an unknown preset or initialisation.

    Examples
    --------
    >>> from giantstep.activations import get_activation
    >>> net = initialize(0, 4, 3, activation=get_activation("relu"), preset="dandi")
    >>> net.output_scale, net.second_layer.tolist()
    (0.25, [1.0, 1.0, -1.0, -1.0])
    """
    _check("preset", preset, tuple(PRESETS))
    if isinstance(activation, str):
        activation = get_activation(activation)
    p = PRESETS[preset]
    return TwoLayerNetwork(
        first_layer=initial_first_layer(seed, width, dim, first_layer or p.first_layer),
        second_layer=initial_second_layer(seed, width, second_layer or p.second_layer),
        output_scale=p.output_scale(width) if output_scale is None else output_scale,
        activation=activation,
    )
