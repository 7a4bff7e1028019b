"""Every test ends with the thread-count variables as the session began (a Dask cluster sets
them), and, under mutation testing only, starts with giantstep's caches empty.

mutmut (scripts/mutation.py) forks each mutant's test run from a process that has already run
the tests, so a cached value (an activation built by ``get_activation``, a parsed target, the
Hermite tensors of a target) comes from the unmutated code, and a mutant of the function that
builds it is never called: it survives without being tested. Emptying the caches before each
test makes the mutated code build them again. Outside mutmut (no ``MUTANT_UNDER_TEST`` in the
environment) nothing changes.

Under mutation testing the studies (tests/test_studies.py) are also left out: each runs quick
studies end to end through a store, the command line and figures (infrastructure, like the
other files pyproject.toml's ``[tool.mutmut]`` leaves out), took more than half of every
surviving mutant's test time, and what they check of the science (a one-step study equals a
plain run, γ) is checked by the core tests. They are left out here rather than in
``pytest_add_cli_args_test_selection`` because mutmut discards every result when that list
changes, and the results of the modules run before the studies existed were made without them.
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


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    kept = [item for item in items if not item.nodeid.startswith("tests/test_studies.py")]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(autouse=True)
def _empty_caches_under_mutation_testing():
    if os.environ.get("MUTANT_UNDER_TEST"):
        for cache in _giantstep_caches():
            cache.cache_clear()
    yield


#: Thread-count variables a Dask LocalCluster leaves set in this process (its nannies apply
#: distributed's ``pre-spawn-environ``, OMP_NUM_THREADS=1 among them, to os.environ), and
#: their values when the session started.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_AT_START = {name: os.environ.get(name) for name in _THREAD_VARIABLES}


@pytest.fixture(autouse=True)
def _thread_variables_restored():
    """Every test ends with the thread-count variables as the session started with them: left
    at 1 by a cluster, every later test drew its blocks on one thread (data.draw_threads)."""
    yield
    for name, value in _AT_START.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
