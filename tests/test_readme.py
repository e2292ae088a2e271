"""README's Python API example runs as written: the one-verb building blocks without a recipe."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def python_block(section: str) -> str:
    text = README.read_text()
    body = text[text.index(f"## {section}\n") :]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def test_the_python_api_example_prunes_quantizes_exports_and_benchmarks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_block("Python API"), "README.md", "exec"), {})
    assert (tmp_path / "digits.onnx").is_file() and (tmp_path / "digits.int8.onnx").is_file()
    assert (tmp_path / "digits.int8.onnx").stat().st_size < (tmp_path / "digits.onnx").stat().st_size / 2
    assert "int8 / fp32 latency at batch 64:" in capsys.readouterr().out
