"""The common setting of the studies: Moniri et al.'s one-step experiment, and small helpers.

``σ* = z + He₂(z)/2``, relu, ``moniri`` preset, ``d = N``, ``η = 2·n^α``, residual ``y`` (the
update the theory's ``γ`` describes), ridge set and test set of their own.
"""

from __future__ import annotations

from typing import Any

TARGET = "z1 + He2(z1)/2"
SCALE = 2.0
#: Ridge values of every readout; the findings use RIDGE_INDEX.
RIDGES = [1e-3, 1e-2, 1e-1]
RIDGE_INDEX = 1


def moniri(
    dim: int,
    n: int,
    alpha: float,
    *,
    seed: int = 0,
    steps: int = 1,
    spectrum: bool = True,
    max_degree: int = 2,
    test: int | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """The config of one run: ``d = N = dim``, batch and ridge set of ``n``, ``η = 2·n^α``.

    ``sections`` are merged into the config's tables (``data={...}``, ``target={...}``,
    ``train={...}``).
    """
    config: dict[str, Any] = {
        "seed": seed,
        "dim": dim,
        "width": dim,
        "preset": "moniri",
        "activation": "relu",
        "target": {"expression": TARGET},
        "train": {
            "steps": steps,
            "batch_size": n,
            "residual": "y",
            "step_size": {"scale": SCALE, "batch_exponent": alpha},
        },
        "readout": {"samples": n, "ridge": RIDGES},
        "test": {"samples": test or n},
    }
    if spectrum:
        config["spectrum"] = {"enabled": True, "top": 30, "max_degree": max_degree}
    for name, table in sections.items():
        config.setdefault(name, {}).update(table)
    return config


def test_error(row) -> float | None:
    """The ridge readout's test error at ``RIDGES[RIDGE_INDEX]``."""
    return row.get(f"errors.{RIDGE_INDEX}.test_error")


def update_cosine(row, step: int = 1) -> float | None:
    """``|cos|`` of the update's top right singular vector with ``β`` after ``step`` steps."""
    return row.get(f"alignment.{step}.update_cosine")
