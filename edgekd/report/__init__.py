"""Renderings of a run's report: report.md and a self-contained report.html (`document`), the
terminal tables (`terminal`), and CI formats — JUnit XML and GitHub's step summary (`ci`)."""

from edgekd.report.ci import append_github_summary, github_summary_path, write_junit, xml_text
from edgekd.report.document import PLOT_DIR, build_blocks, write_reports
from edgekd.report.tables import gate_rows, markdown_table, markdown_text, verdict_line
from edgekd.report.terminal import print_summary, render_gates, summary_table

__all__ = [
    "PLOT_DIR", "append_github_summary", "build_blocks", "gate_rows", "github_summary_path", "markdown_table", "markdown_text",
    "print_summary", "render_gates", "summary_table", "verdict_line", "write_junit", "write_reports", "xml_text",
]
