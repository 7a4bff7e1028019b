"""Each paper claim as a named, checkable experiment.

A reproduction module in this package exports ``REPRODUCTIONS``: a dict from a name
(``moniri-spikes``, ``dandi-batch``, ...) to a function ``(quick: bool, out: Path) -> Report``.
Modules are discovered, so a new paper adds a module and touches nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from giantstep.reproduce.report import Check, Report

Reproduction = Callable[[bool, Path], Report]


def reproductions() -> dict[str, Reproduction]:
    """Every reproduction of every module of this package, by name."""
    found: dict[str, Reproduction] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "report":
            continue
        found.update(
            getattr(importlib.import_module(f"{__name__}.{module.name}"), "REPRODUCTIONS", {})
        )
    return dict(sorted(found.items()))


__all__ = ["Check", "Report", "Reproduction", "reproductions"]
