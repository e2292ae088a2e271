"""report.md and the self-contained report.html: content, embedded plots, and a real headless-browser render."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from edgekd.gate import GatesConfig, evaluate_gates
from edgekd.report import PLOT_DIR, write_reports
from tests.test_gate import run_cli, sample_report

IMG_TAG = '<img src="data:image/png;base64,'
DATA_URI = re.compile(r'data:image/png;base64,([A-Za-z0-9+/=]+)"')


def gated_report() -> dict[str, Any]:
    """The sample run with its gate results stored, as the runner does at the end of compress."""
    report = sample_report()
    config = GatesConfig(min_accuracy=0.9, max_accuracy_drop=1.0, max_size_mb=0.5, min_speedup=3)
    report["gates_config"] = config.model_dump(exclude_none=True)
    report["gates"] = [r.to_json() for r in evaluate_gates(report, config)]
    return report


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Path]:
    return write_reports(tmp_path, gated_report())


def test_markdown_has_the_summary_steps_gates_and_linked_plots(written: tuple[Path, Path]):
    markdown_path, _ = written
    text = markdown_path.read_text()
    for expected in (
        "# edgekd report · quickstart",
        "| teacher resnet_s(width=16) | 97.50% | 1,234,567 | 23,456 | 91.6 KiB |",
        "| ONNX int8 (student.int8.onnx) | 95.30% |  |  | 8.8 KiB | 2.60× @ batch 1, 3.40× @ batch 64 |",
        "| stages[0] prune | 3/4 | 84.00% | 96.20% | – | 600,000 |",
        "| stages[1] qat (int8) | 1/1 | 94.00% | 95.50% | 96.10% / 95.80% (passes the teacher) |",
        "3.40× faster at batch 64 (95% CI 3.20–3.60)",
        "| max_accuracy_drop | 2.20 points | ≤ 1.00 points | FAIL |",
        "1 of 4 gates failed: max_accuracy_drop",
    ):
        assert expected in text
    linked = re.findall(rf"\]\(({PLOT_DIR}/[a-z]+\.png)\)", text)
    assert linked == [f"{PLOT_DIR}/trajectory.png", f"{PLOT_DIR}/pareto.png", f"{PLOT_DIR}/latency.png"]
    assert all((markdown_path.parent / link).stat().st_size > 10_000 for link in linked)


def test_html_is_self_contained_with_every_plot_embedded(written: tuple[Path, Path]):
    _, html_path = written
    page = html_path.read_text()
    assert page.count(IMG_TAG) == 3
    for data in DATA_URI.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and image.width >= 800
    assert all(url.startswith("data:image/png;base64,") for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page))
    assert "http" not in DATA_URI.sub('"', page)  # no external resource, nor any link at all
    assert "student.int8.onnx" in page and "max_accuracy_drop" in page


def test_a_run_without_bench_or_gates_gets_only_the_trajectory(tmp_path: Path):
    report = sample_report()
    del report["latency"], report["gates"], report["student"]["onnx"]
    markdown_path, html_path = write_reports(tmp_path, report)
    page = html_path.read_text()
    assert page.count(IMG_TAG) == 1
    assert "Latency" not in page and "Gates" not in page
    assert "Deployed artefact student (PyTorch)" in markdown_path.read_text()


def test_the_report_says_how_speed_was_measured_and_names_findings(tmp_path: Path, written: tuple[Path, Path]):
    paired = written[0].read_text()  # a report without `latency.mode` was timed paired
    assert "speed measured in paired mode" in paired and "all models measured side by side in one process" in paired
    report = sample_report()
    report["latency"].update(mode="deployment", spinning="on", findings=["student.int8 at batch 1, spinning on: bimodal: 4/6 processes at 0.20 ms"])
    markdown = write_reports(tmp_path, report)[0].read_text()
    assert "speed measured in deployment mode, spinning on; finding: student.int8 at batch 1, spinning on: bimodal" in markdown
    assert "deployment mode, spinning on: each model alone in a fresh process per round" in markdown


def test_a_fresh_student_distilled_without_before_recovery_points(tmp_path: Path):
    report = sample_report()
    report["steps"] = [{"stage": "distill", "stage_index": 0, "step": 1, "steps": 1, "accuracy": 0.96, "accuracy_before_recovery": None,
                        "macs": 234_567, "params": 4_370, "size_bytes": 17_480, "seconds": 3.2}]  # fmt: skip
    markdown_path, _ = write_reports(tmp_path, report)
    assert "| stages[0] distill | 1/1 | – | 96.00% |" in markdown_path.read_text()


def test_report_command_writes_into_the_run_folder(tmp_path: Path):
    (tmp_path / "report.json").write_text(json.dumps(gated_report()))
    assert run_cli(["report", str(tmp_path)])[0] == 0
    assert (tmp_path / "report.html").is_file() and (tmp_path / "report.md").is_file()
    code, error = run_cli(["report", str(tmp_path / "missing")])
    assert code == 2 and "does not exist" in error


CHROMIUM = shutil.which("chromium")


def chromium(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,2000",
    ]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *mode, page.as_uri()], capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: apt-get install -y chromium)")
def test_report_html_renders_in_headless_chromium(written: tuple[Path, Path], tmp_path: Path):
    _, html_path = written
    dom = chromium(html_path, tmp_path / "profile-dom", "--dump-dom").stdout
    assert "<h1>edgekd report · quickstart</h1>" in dom
    assert dom.count(IMG_TAG) == 3
    shot = tmp_path / "shot.png"
    chromium(html_path, tmp_path / "profile-shot", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500  # text, tables and plots, not a blank page
