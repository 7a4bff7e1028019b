"""What a reproduction reports: each prediction beside its measurement, and the figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from giantstep.files import atomic_path


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (PNG, 120 dpi) and close a reproduction's figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path


@dataclass(frozen=True)
class Check:
    """One prediction checked: ``holds`` says whether the measurement agrees with it."""

    claim: str
    measured: str
    predicted: str
    holds: bool


@dataclass
class Report:
    """The outcome of one reproduction: its checks, figures written and wall time."""

    name: str
    checks: list[Check] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every prediction holds."""
        return all(check.holds for check in self.checks)

    def table(self) -> Table:
        """The checks as a rich table."""
        table = Table(title=f"{self.name}: measured vs predicted")
        for column in ("claim", "measured", "predicted", "holds"):
            table.add_column(column)
        for c in self.checks:
            # Claims quote formulas such as E[f(x) He2(x)], which rich would read as markup.
            cells = (escape(c.claim), escape(c.measured), escape(c.predicted))
            table.add_row(*cells, "yes" if c.holds else "[red]NO[/red]")
        return table

    def to_dict(self) -> dict:
        """The report as plain JSON data."""
        return {
            "name": self.name,
            "ok": self.ok,
            "seconds": self.seconds,
            "figures": [str(p) for p in self.figures],
            "checks": [c.__dict__ for c in self.checks],
        }
