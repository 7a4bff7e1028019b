"""Beyond the papers: their open questions as named, runnable studies (SCIENCE.md §4).

Each module of this package exports ``STUDIES``: a dict from a name (``inputs``,
``label-noise``, ...) to a :class:`~giantstep.studies.core.Study`. A study runs as a sweep
through the results store (resumable) and reports findings — measured numbers with their spread
over seeds and the theory beside them where there is one — and a figure.
"""

from __future__ import annotations

import importlib
import pkgutil

from giantstep.studies.core import Finding, Row, Study, StudyReport, run_study


def studies() -> dict[str, Study]:
    """Every study of every module of this package, by name."""
    found: dict[str, Study] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "core":
            continue
        found.update(getattr(importlib.import_module(f"{__name__}.{module.name}"), "STUDIES", {}))
    return dict(sorted(found.items()))


__all__ = ["Finding", "Row", "Study", "StudyReport", "run_study", "studies"]
