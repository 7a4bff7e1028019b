"""giantstep: what a two-layer network learns from giant gradient steps.

``giantstep.run(config)`` runs one experiment (a dict of config tables or an
``ExperimentConfig``) and returns a typed ``RunResult``; ``giantstep.load(path)`` reads a
results store (``giantstep sweep``) into a pandas DataFrame.
"""

import os

# Idle threads sleep at once instead of spinning. A block alternates BLAS's threads (the
# products) with numba's OpenMP threads (the elementwise passes) on the same cores; each
# library's idle threads otherwise spin for milliseconds after every call and take the cores
# from the other's (measured: a d = N = 1000 block 8-9 % faster). Read when OpenBLAS and
# OpenMP load, so it acts when giantstep is imported before numpy; a user's setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # 2^4 cycles, OpenBLAS's shortest
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from giantstep.config import ConfigError, ExperimentConfig, load_config
from giantstep.experiment import RunResult, run
from giantstep.store import load
from giantstep.train import DivergenceError

__all__ = [
    "ConfigError",
    "DivergenceError",
    "ExperimentConfig",
    "RunResult",
    "load",
    "load_config",
    "run",
]
