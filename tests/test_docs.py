"""The public API is documented: numpydoc sections, examples that run, a docstring everywhere."""

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import giantstep

PACKAGE = Path(giantstep.__file__).parent

#: Modules whose examples are run (the public API: run, configs, kernels, theory, results).
DOCTESTED = [
    "giantstep.config",
    "giantstep.experiment",
    "giantstep.store",
    "giantstep.model",
    "giantstep.reduction",
    "giantstep.train",
    "giantstep.readout",
    "giantstep.spectrum",
    "giantstep.theory.bands",
    "giantstep.theory.spikes",
    "giantstep.theory.learnable",
    "giantstep.theory.gaussian",
    "giantstep.theory.errors",
    "giantstep.learning_curve",
    "giantstep.fulltrain",
    "giantstep.corruption",
]

#: Functions a user calls first: each has Parameters, Returns (or Yields) and Examples.
API = [
    "giantstep.experiment.run",
    "giantstep.config.load_config",
    "giantstep.store.load",
    "giantstep.reduction.reduce_blocks",
    "giantstep.train.gradient",
    "giantstep.train.giant_steps",
    "giantstep.readout.feature_statistics",
    "giantstep.readout.ridge_path",
    "giantstep.spectrum.feature_sums",
    "giantstep.model.initialize",
    "giantstep.theory.bands.bands",
    "giantstep.theory.bands.band_index",
    "giantstep.theory.bands.predicted_spikes",
    "giantstep.theory.spikes.direction_cosine",
    "giantstep.theory.learnable.predict",
    "giantstep.theory.learnable.hermite_tensors",
    "giantstep.theory.learnable.leap_index",
    "giantstep.theory.gaussian.gaussian_moments",
    "giantstep.theory.errors.predict_errors",
    "giantstep.theory.errors.predict_learning_curve",
    "giantstep.theory.errors.random_features_errors",
    "giantstep.theory.errors.spectral_ridge_errors",
    "giantstep.theory.errors.spiked_errors",
    "giantstep.theory.errors.predicted_features",
    "giantstep.theory.errors.trained_layer_features",
    "giantstep.learning_curve.predict_curve",
    "giantstep.fulltrain.train_fully",
]


@pytest.mark.parametrize("name", DOCTESTED)
def test_the_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


@pytest.mark.parametrize("name", API)
def test_the_api_has_numpydoc_sections(name):
    module_name, attribute = name.rsplit(".", 1)
    doc = getattr(importlib.import_module(module_name), attribute).__doc__
    returns = "Returns\n" in doc or "Yields\n" in doc
    assert "Parameters\n" in doc and returns and "Examples\n" in doc, name


def undocumented(nodes, where: str) -> list[str]:
    """Public functions and classes (and their public methods) without a docstring."""
    missing = []
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            if ast.get_docstring(node) is None:
                missing.append(f"{where}{node.name}")
            if isinstance(node, ast.ClassDef):
                missing += undocumented(node.body, f"{where}{node.name}.")
    return missing


def test_every_public_definition_has_a_docstring():
    missing = [
        name
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in undocumented(ast.parse(path.read_text()).body, f"{path.relative_to(PACKAGE)}:")
    ]
    assert not missing, missing
