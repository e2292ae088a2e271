"""User strings reach terminals, Markdown, step summaries and JUnit XML as text, never as markup or structure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from edgekd.report import write_reports
from tests.conftest import tiny_recipe
from tests.test_exit_codes import edgekd_cli
from tests.test_gate import sample_report

HOSTILE_NAME = "evil[/x] [bold]\n## injected heading\n<script>alert(1)</script> | cell \x1b[31m\x00 [link](http://example.com)"


def hostile_report() -> dict:
    report = sample_report()
    report["name"] = HOSTILE_NAME
    report["teacher"]["model"] = "pkg.nets:net(label='<img src=x onerror=alert(1)>')"
    return report


def test_a_rich_markup_tag_in_a_path_prints_as_text(tmp_path: Path, capsys):
    folder = tmp_path / "a[" / "x]b"  # the path reads .../a[/x]b/r.yaml
    folder.mkdir(parents=True)
    recipe = folder / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "run")))
    code, output = edgekd_cli(["validate", str(recipe)], capsys)
    assert code == 0 and "a[/x]b/r.yaml: valid" in output


def test_a_hostile_report_name_stays_text_in_the_terminal_step_summary_and_junit(tmp_path: Path, capsys, monkeypatch):
    (tmp_path / "report.json").write_text(json.dumps(hostile_report()))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "gates.xml"
    code, output = edgekd_cli(["gate", str(tmp_path / "report.json"), "--min-accuracy", "0.5", "--junit", str(junit)], capsys)
    assert code == 0 and "evil[/x] [bold]" in output
    text = summary.read_text()
    heading, *rest = text.splitlines()
    assert heading.startswith("### ✅ edgekd gates · evil") and "injected heading" in heading  # one line: no new heading
    assert not any(line.startswith("#") for line in rest)
    assert "<script>" not in text and "&lt;script&gt;" in text and "](http" not in text
    suite = ET.parse(junit).getroot().find("testsuite")  # parses: no control characters left
    assert suite.find("testcase").get("classname").startswith("edgekd.gates.evil[/x]")


def test_report_markdown_escapes_html_and_never_breaks_a_table(tmp_path: Path):
    markdown_path, html_path = write_reports(tmp_path, hostile_report())
    markdown = markdown_path.read_text()
    assert "<script>" not in markdown and "<img" not in markdown.replace('<img src="data', "")
    assert "&lt;script&gt;" in markdown
    assert "\n## injected heading" not in markdown
    teacher_row = next(line for line in markdown.splitlines() if line.startswith("| teacher"))
    assert teacher_row.count(" | ") == 5  # six cells: the hostile model spec stayed in one
    assert "<script>" not in html_path.read_text()


@pytest.mark.parametrize("workdir_name", ["on", "1e3", "a[x]: b"])
def test_a_workdir_option_is_a_folder_name_even_where_yaml_reads_something_else(workdir_name: str, tmp_path: Path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "unused", data={"dataset": "npz"})))  # stops at the data, before training
    code, output = edgekd_cli(["compress", str(recipe), "--workdir", str(tmp_path / workdir_name), "--quiet"], capsys)
    assert code == 2 and "data.root: the npz dataset needs" in output
    assert (tmp_path / workdir_name / ".edgekd-run").is_file()
