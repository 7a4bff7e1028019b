"""Under mutation testing only: every test starts with giantstep's caches empty.

mutmut (scripts/mutation.py) forks each mutant's test run from a process that has already run
the tests, so a cached value (an activation built by ``get_activation``, a parsed target, the
Hermite tensors of a target) comes from the unmutated code, and a mutant of the function that
builds it is never called: it survives without being tested. Emptying the caches before each
test makes the mutated code build them again. Outside mutmut (no ``MUTANT_UNDER_TEST`` in the
environment) nothing changes.
"""

import functools
import os
import sys

import pytest


def _giantstep_caches():
    for name, module in list(sys.modules.items()):
        if name == "giantstep" or name.startswith("giantstep."):
            for value in list(vars(module).values()):
                if isinstance(value, functools._lru_cache_wrapper):
                    yield value


@pytest.fixture(autouse=True)
def _empty_caches_under_mutation_testing():
    if os.environ.get("MUTANT_UNDER_TEST"):
        for cache in _giantstep_caches():
            cache.cache_clear()
    yield
