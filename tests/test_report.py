"""The printed report of a reproduction shows every claim as written."""

from rich.console import Console

from giantstep.reproduce.report import Check, Report


def test_report_table_prints_formulas_with_brackets_verbatim():
    report = Report("demo", [Check("E[f(x) He2(<β,x>)] ≈ 1", "[0.98]", "[1]", holds=False)])
    console = Console(record=True, width=200)
    console.print(report.table())
    text = console.export_text()
    assert "E[f(x) He2(<β,x>)] ≈ 1" in text
    assert "[0.98]" in text and "NO" in text
    assert not report.ok
