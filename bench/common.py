"""Shared by the benchmark scripts: machine description and result-file handling."""

from __future__ import annotations

import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    return f"{cpu}, {torch.get_num_threads()} threads, Python {platform.python_version()}, torch {torch.__version__}"


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * 100:.2f} ± {spread * 100:.2f}"


def over_seeds(label: str, recipes: list[dict], epochs: int) -> tuple[str, dict]:
    """Run one recipe per seed; the results-table row (final test accuracy mean ± std, seconds per
    training epoch) and the last run's report."""
    import edgekd

    accuracies, epoch_seconds = [], []
    for seed, recipe in enumerate(recipes):
        report = edgekd.compress(recipe, quiet=True).to_json()
        step = report["steps"][-1]
        accuracies.append(step["accuracy"])
        epoch_seconds.append(step["recovery_seconds"] / epochs)
        print(f"{label} seed {seed}: {step['accuracy']:.4f} ({epoch_seconds[-1]:.1f} s/epoch)", flush=True)
    return f"| {label} | {mean_std(accuracies)} | {statistics.mean(epoch_seconds):.1f} |", report


def replace_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    header = f"## {title}"
    start = text.find(header)
    section = f"{header}\n\n{body.strip()}\n"
    if start == -1:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(header))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "")  # a blank line before the next section
    RESULTS.write_text(text)
