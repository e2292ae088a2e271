"""Gate verdicts for CI systems: JUnit XML (one testcase per gate) and GitHub's step summary."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgekd.errors import InputError
from edgekd.files import write_atomic
from edgekd.records import GateResult
from edgekd.report.tables import GATE_ALIGN, GATE_HEADERS, gate_rows, markdown_table, markdown_text, verdict_line

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: Any) -> str:
    """A value without the characters XML 1.0 cannot hold (ElementTree would write them raw)."""
    return _XML_INVALID.sub("", str(value))


def github_summary_path() -> Path | None:
    """`$GITHUB_STEP_SUMMARY` (set by GitHub Actions), checked before any work; None when unset."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    if path.is_dir() or not path.parent.is_dir():
        problem = "is a folder" if path.is_dir() else "is in a folder that does not exist"
        raise InputError(f"GITHUB_STEP_SUMMARY={target!r} {problem}; point it at a file (GitHub Actions sets it) or unset it")
    return path


def append_github_summary(results: list[GateResult], title: str) -> Path | None:
    """Append a Markdown table to `$GITHUB_STEP_SUMMARY`; None when unset. GitHub's protocol is an
    appended file, so this is one append of the whole text, not a replacement."""
    path = github_summary_path()
    if path is None:
        return None
    mark = "✅" if all(r.passed for r in results) else "❌"
    table = markdown_table(GATE_HEADERS, gate_rows(results), GATE_ALIGN)
    text = f"### {mark} {markdown_text(title)}: {verdict_line(results)}\n\n{table}\n"
    with open(path, "a", encoding="utf-8") as summary:
        summary.write(text)
    return path


def write_junit(results: list[GateResult], path: str | Path, classname: str = "edgekd.gates") -> Path:
    """One <testcase> per gate in one <testsuite name="edgekd gates">; failures carry the reason."""
    failures = str(sum(not r.passed for r in results))
    counts = {"tests": str(len(results)), "failures": failures, "errors": "0", "skipped": "0", "time": "0"}
    suites = ET.Element("testsuites", counts)
    suite = ET.SubElement(suites, "testsuite", {"name": "edgekd gates", **counts})
    for result, row in zip(results, gate_rows(results)):
        case = ET.SubElement(suite, "testcase", {"name": xml_text(result.name), "classname": xml_text(classname), "time": "0"})
        if result.passed:
            ET.SubElement(case, "system-out").text = xml_text(result.reason)
        else:
            failure = ET.SubElement(case, "failure", {"message": xml_text(result.reason), "type": "GateFailed"})
            failure.text = xml_text(f"measured {row[1]}, threshold {row[2]}")
    ET.indent(suites)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, ET.tostring(suites, encoding="utf-8", xml_declaration=True))
