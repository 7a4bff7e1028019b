"""Numbers are a contract: the full JSON results of seven configs, frozen before a refactor, are
reproduced (float64 to 1e-12 relative; float32 to 1e-4, where a fused kernel may move last bits).

New keys in a result or a config are allowed; every frozen key must be there with its value.
The predicted errors hold to 1e-9 (``THEORY_RTOL``): their solvers iterate to a tolerance, and
a machine whose BLAS rounds otherwise may take one more iteration.
"""

import json
import math
from pathlib import Path

import pytest

import giantstep

FROZEN = json.loads((Path(__file__).parent / "pinned" / "results.json").read_text())
THEORY_RTOL = 1e-9


def assert_contains(frozen, actual, rtol, path="result"):
    if isinstance(frozen, dict):
        assert isinstance(actual, dict), path
        for key, value in frozen.items():
            assert key in actual, f"{path}.{key} is missing"
            tolerance = max(rtol, THEORY_RTOL) if key == "predicted_errors" else rtol
            assert_contains(value, actual[key], tolerance, f"{path}.{key}")
    elif isinstance(frozen, list):
        assert isinstance(actual, list) and len(actual) == len(frozen), path
        for i, (f, a) in enumerate(zip(frozen, actual, strict=True)):
            assert_contains(f, a, rtol, f"{path}[{i}]")
    elif isinstance(frozen, float) and not isinstance(frozen, bool):
        assert isinstance(actual, int | float), path
        assert math.isclose(actual, frozen, rel_tol=rtol, abs_tol=rtol * 1e-2), (
            f"{path}: {actual!r} != frozen {frozen!r}"
        )
    else:
        assert actual == frozen, f"{path}: {actual!r} != frozen {frozen!r}"


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_results_match_the_frozen_json(name):
    frozen = FROZEN[name]
    result = giantstep.run(frozen["input"]).model_dump(mode="json")
    dtype = frozen["result"]["config"]["compute"]["dtype"]
    assert_contains(frozen["result"], result, rtol=1e-12 if dtype == "float64" else 1e-4)
