"""Small configs of the error-theory tests (test_error_overlays, test_theory_errors_command)."""

from __future__ import annotations

import json

#: A one-step run of the moniri preset at residual y: all three variants in scope.
SMALL = {
    "dim": 60,
    "width": 50,
    "activation": "relu",
    "train": {"residual": "y", "batch_size": 240, "step_size": {"scale": 2.0}},
    "readout": {"samples": 120, "ridge": [0.01, 0.1]},
    "test": {"samples": 256},
    "theory": {"errors": True},
}
#: Cui et al.'s setting: equal neurons, the predicted layer on the homogeneous path.
CUI = {
    **SMALL,
    "preset": "dandi",
    "activation": "tanh",
    "target": {"expression": "tanh(z1)"},
    "model": {"second_layer": "ones"},
    "train": {"residual": "y-f", "batch_size": 120, "step_size": {"width_exponent": 1.0}},
}


def with_(data: dict, **tables) -> dict:
    """A copy of ``data`` with each table updated (one level deep) or each key replaced."""
    data = json.loads(json.dumps(data))
    for key, value in tables.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return data
