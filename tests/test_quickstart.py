"""README's quickstart, through the installed console script, with tiny epochs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.test_report import CHROMIUM, IMG_TAG, chromium

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_quickstart_recipe_through_the_cli(tmp_path):
    workdir = tmp_path / "quickstart"
    command = [
        sys.executable, "-m", "edgekd", "compress", str(ROOT / "recipes" / "quickstart.yaml"),
        "--workdir", str(workdir), "--set", "teacher.train.epochs=8", "--set", "stages[0].recover.epochs=2",
        "--set", "stages[1].recover.epochs=1", "--set", "stages[3].bench.min_duration_s=0.2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for column in ("model", "accuracy", "MACs", "parameters", "size"):
        assert column in result.stdout
    report = json.loads((workdir / "report.json").read_text())
    assert report["complete"] and report["student"]["accuracy"] > 0.8
    assert report["teacher"]["macs"] > 3 * report["student"]["macs"]
    assert [s["stage"] for s in report["steps"]] == ["prune", "prune", "prune", "qat"]
    int8 = report["student"]["onnx"]["int8"]
    assert (workdir / int8["path"]).is_file() and int8["accuracy"] > 0.8
    speedup = report["latency"]["speedup"]["64"]
    assert speedup["ci"][0] <= speedup["ratio"] <= speedup["ci"][1] and speedup["model"] == "student.int8"
    assert all(gate["passed"] for gate in report["gates"]) and "all 3 gates passed" in result.stdout
    assert_report_renders(workdir / "report.html", tmp_path)


def assert_report_renders(html_path: Path, tmp_path: Path) -> None:
    """The real run's report.html opened in headless Chromium: every plot embedded, and drawn."""
    html = html_path.read_text()
    assert html.count(IMG_TAG) == 3 and "http" not in html.replace("http://www.w3.org", "")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install -y chromium)")
    dom = chromium(html_path, tmp_path / "profile-dom", "--dump-dom").stdout
    assert "edgekd report · quickstart" in dom and dom.count(IMG_TAG) == 3
    shot = tmp_path / "shot.png"
    chromium(html_path, tmp_path / "profile-shot", f"--screenshot={shot}")
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500


def test_help_of_every_command_has_an_example():
    output = subprocess.run([sys.executable, "-m", "edgekd", "--help"], capture_output=True, text=True).stdout
    commands = [m.group(1) for m in map(re.compile(r"^│ ([a-z][\w-]*)\s").match, output.splitlines()) if m]
    assert {"compress", "validate"} <= set(commands)
    for command in commands:
        text = subprocess.run([sys.executable, "-m", "edgekd", command, "--help"], capture_output=True, text=True).stdout
        assert "Example" in text, command
