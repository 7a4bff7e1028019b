"""Freeze the full JSON results of a few configs into results.json.

Run `python tests/pinned/freeze.py tests/pinned/results.json [NAME ...]` only for a change that
is meant to change results (and say so in the commit and the README); with NAMEs, only those
configs are frozen again and the others are kept as they are. test_pinned_results.py checks the
rest.
"""

import json
import sys
from pathlib import Path

import giantstep

CONFIGS = {
    "moniri_relu_one_step": {
        "dim": 120,
        "width": 90,
        "seed": 1,
        "train": {
            "batch_size": 600,
            "residual": "y",
            "step_size": {"scale": 2.0, "batch_exponent": 0.3},
        },
        "readout": {"samples": 700, "ridge": [0.001, 0.1]},
        "test": {"samples": 500},
        "compute": {"block_size": 512},
    },
    "dandi_three_steps": {
        "dim": 100,
        "width": 24,
        "seed": 2,
        "preset": "dandi",
        "activation": "tanh",
        "target": {"expression": "z1 + z1*z2", "noise": 0.1},
        "train": {
            "steps": 3,
            "batch_size": 400,
            "step_size": {"scale": 1.0, "width_exponent": 1.0, "dim_exponent": 0.5},
        },
        "readout": {"samples": 600, "ridge": [0.01]},
        "test": {"samples": 300},
    },
    "reused_batch_erf_rademacher": {
        "dim": 80,
        "width": 60,
        "seed": 3,
        "activation": "erf",
        "data": {"distribution": "rademacher"},
        "train": {"steps": 2, "reuse_batch": True, "batch_size": 500, "step_size": {"scale": 1.5}},
        "readout": {"samples": 400, "ridge": [0.001, 0.01, 0.1]},
        "test": {"samples": 300},
    },
    "spectrum_softplus": {
        "dim": 100,
        "width": 100,
        "seed": 4,
        "activation": "softplus",
        "train": {
            "batch_size": 400,
            "residual": "y",
            "step_size": {"scale": 2.0, "batch_exponent": 0.3},
        },
        "readout": {"samples": 500, "ridge": [0.001]},
        "test": {"samples": 300},
        "spectrum": {"enabled": True, "top": 10, "max_degree": 3},
    },
    "float32_relu": {
        "dim": 100,
        "width": 80,
        "seed": 5,
        "train": {"batch_size": 500, "step_size": {"scale": 2.0, "batch_exponent": 0.3}},
        "readout": {"samples": 600, "ridge": [0.01]},
        "test": {"samples": 300},
        "compute": {"dtype": "float32"},
    },
    "random_features_sphere": {
        "dim": 90,
        "width": 70,
        "seed": 6,
        "activation": "tanh",
        "data": {"distribution": "sphere"},
        "target": {"expression": "tanh(z1)", "noise": 0.2},
        "train": {"steps": 0},
        "readout": {"samples": 500, "ridge": [0.01, 1.0]},
        "test": {"samples": 300},
    },
    "cui_theory_errors": {
        "dim": 80,
        "width": 60,
        "seed": 7,
        "preset": "dandi",
        "model": {"second_layer": "ones"},
        "target": {"expression": "tanh(z1) + 3", "noise": 0.1},
        "train": {
            "batch_size": 320,
            "residual": "y",
            "step_size": {"scale": 1.0, "width_exponent": 1.0},
        },
        "readout": {"samples": 240, "ridge": [0.01, 0.1]},
        "test": {"samples": 256},
        "theory": {"errors": True},
    },
}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    names = sys.argv[2:] or list(CONFIGS)
    frozen = json.loads(out.read_text()) if sys.argv[2:] else {}
    for name in names:
        cfg = CONFIGS[name]
        result = giantstep.run(cfg).model_dump(mode="json")
        for key in ("seconds", "peak_memory_bytes", "version", "theory_seconds"):
            result.pop(key)
        frozen[name] = {"input": cfg, "result": result}
    out.write_text(json.dumps(frozen, indent=1, sort_keys=True))
