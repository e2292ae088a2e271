"""Gate verdicts for CI systems: JUnit XML (one testcase per gate) and GitHub's step summary."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from edgekd.records import GateResult
from edgekd.report.tables import GATE_ALIGN, GATE_HEADERS, gate_rows, markdown_table, verdict_line


def append_github_summary(results: list[GateResult], title: str) -> Path | None:
    """Append a Markdown table to `$GITHUB_STEP_SUMMARY` (set by GitHub Actions); None when unset."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    mark = "✅" if all(r.passed for r in results) else "❌"
    table = markdown_table(GATE_HEADERS, gate_rows(results), GATE_ALIGN)
    text = f"### {mark} {title}: {verdict_line(results)}\n\n{table}\n"
    with open(target, "a", encoding="utf-8") as summary:
        summary.write(text)
    return Path(target)


def write_junit(results: list[GateResult], path: str | Path, classname: str = "edgekd.gates") -> Path:
    """One <testcase> per gate in one <testsuite name="edgekd gates">; failures carry the reason."""
    failures = str(sum(not r.passed for r in results))
    counts = {"tests": str(len(results)), "failures": failures, "errors": "0", "skipped": "0", "time": "0"}
    suites = ET.Element("testsuites", counts)
    suite = ET.SubElement(suites, "testsuite", {"name": "edgekd gates", **counts})
    for result, row in zip(results, gate_rows(results)):
        case = ET.SubElement(suite, "testcase", {"name": result.name, "classname": classname, "time": "0"})
        if result.passed:
            ET.SubElement(case, "system-out").text = result.reason
        else:
            failure = ET.SubElement(case, "failure", {"message": result.reason, "type": "GateFailed"})
            failure.text = f"measured {row[1]}, threshold {row[2]}"
    ET.indent(suites)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    return path
