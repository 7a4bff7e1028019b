"""giantstep: what a two-layer network learns from giant gradient steps.

``giantstep.run(config)`` runs one experiment (a dict of config tables or an
``ExperimentConfig``) and returns a typed ``RunResult``; ``giantstep.load(path)`` reads a
results store (``giantstep sweep``) into a pandas DataFrame.
"""

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
