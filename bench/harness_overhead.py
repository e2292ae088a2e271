"""What the bench harness adds to a measured latency (issue 5), and how far apart two
sessions of the same model measure (the resolution of a latency ratio).

Harness overhead: for a small and a larger conv net (exported here with torch), one
onnxruntime session is timed alternately by the harness (Runner.bind + timing.measure,
exactly what `benchmark()` runs) and by a bare `session.run` loop timed with
time.perf_counter, many times in alternation, in the same process. Same session, same inputs,
so the difference is the harness. Target: under 3 % or under 20 µs.

Resolution: eight times, two fresh sessions of the small model measured side by side by
`benchmark()`; their median ratio would be 1.000 if sessions were interchangeable.

Writes the section "## Harness overhead (issue 5)" of bench/RESULTS_bench.md.

    python bench/harness_overhead.py"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.bench import benchmark, environment
from edgekd.bench.backends import BackendOptions, backends
from edgekd.bench.stats import Ratio, median_ratio
from edgekd.bench.timing import TimingSettings, measure

RESULTS = Path(__file__).with_name("RESULTS_bench.md")
THREADS = 2
A_A_PAIRS = 8
# (runs per repetition, repetitions): alternating often keeps the load of a shared machine
# from landing on one side; the larger model alternates every few runs.
SCHEDULE = {"small": (2000, 20), "larger": (5, 80)}


def conv_net(width: int, depth: int) -> torch.nn.Module:
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU()]
    for _ in range(depth - 1):
        layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 10))


def export(model: torch.nn.Module, path: Path, size: int) -> Path:
    torch.onnx.export(
        model.eval(), torch.randn(1, 3, size, size), str(path), dynamo=False,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}},
    )  # fmt: skip
    return path


def bare_loop(session, feeds: dict[str, np.ndarray], runs: int) -> list[float]:
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        latencies.append(time.perf_counter() - start)
    return latencies


def overhead(path: Path, runs: int, repeats: int) -> dict[str, Any]:
    """Harness vs bare loop on one session, alternating `repeats` times, `runs` calls each time."""
    options = BackendOptions(threads=THREADS)
    runner = backends.get("onnxruntime")().load(path, options)
    feeds = options.inputs.make(runner.input_specs, 1, str(path))
    target = runner.bind(feeds)
    # No duration floor: measure() times exactly `runs` calls (a multiple of 10 rounds, or 5 rounds of 1).
    settings = TimingSettings(warmup_s=0.0, min_iterations=runs, min_duration_s=0.0)

    def by_harness() -> np.ndarray:
        return measure([target], settings)[0].blocks_s.ravel()

    harness, bare = [], []
    for repeat in range(repeats):  # alternate which goes first, so drift hits both alike
        if repeat % 2:
            bare.append(bare_loop(runner.session, feeds, runs))
        harness.append(by_harness())
        if not repeat % 2:
            bare.append(bare_loop(runner.session, feeds, runs))
    return {
        "bare_ms": float(np.median(bare)) * 1e3,
        "harness_ms": float(np.median(harness)) * 1e3,
        "ratio": median_ratio(np.array(harness), np.array(bare)),  # paired by repeat
        "runs": runs * repeats,
    }


def session_pairs(path: Path) -> list[tuple[float, float, float]]:
    """(median ratio, bootstrap CI low, high) of two fresh sessions of one model, A_A_PAIRS times."""
    ratios = []
    for _ in range(A_A_PAIRS):
        result = benchmark(
            [path, path], mode="paired", threads=THREADS, warmup_s=0.05, min_duration_s=0.3, memory=False, roofline=False
        )
        ratio = result.ratios[0].ratio
        ratios.append((ratio.median_ratio, ratio.bootstrap_ci_low, ratio.bootstrap_ci_high))
    return ratios


def verdict(ratio: Ratio, added_us: float) -> str:
    """Met when the whole interval is under 3 % (or the median adds under 20 µs); unresolved when
    the interval spans both zero and 3 %, i.e. the machine's noise hides what the harness adds."""
    if ratio.bootstrap_ci_high - 1 < 0.03 or added_us < 20:
        return "met"
    if ratio.bootstrap_ci_low - 1 <= 0:
        return "not resolved: the interval spans 0 (load noise)"
    return "NOT met"


def report(
    models: dict[str, tuple[str, Path]], overheads: dict[str, dict[str, Any]], pairs: list[tuple[float, float, float]]
) -> str:
    env = environment()
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k != "edgekd")
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    lines = [
        "## Harness overhead (issue 5)",
        "",
        f"Machine: {env['cpu']['model']}, {env['cpu']['physical_cores']} physical / {env['cpu']['logical_cores']} "
        f"logical cores ({' '.join(env['cpu']['isa'])}), shared with other work (load average {' '.join(load)} at the "
        f"end). {date}. {versions}. onnxruntime {THREADS} intra-op threads, spinning 'stop', batch 1.",
        "",
        "Same session, same inputs, timed alternately by the harness (`Runner.bind` + `timing.measure`) and by a bare",
        "`session.run` loop with `time.perf_counter`, alternating (which goes first alternates too) 20 times",
        "× 2000 runs (small) and 80 times × 5 runs (larger). Added = ratio of medians − 1, with a 95 % bootstrap",
        "interval paired by repetition, since the load of this shared machine drifts.",
        "",
        "| model | bare loop median | harness median | added (95 % CI) | added | runs each | < 3 % or < 20 µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in overheads.items():
        ratio = result["ratio"]
        added_us = result["harness_ms"] * 1e3 - result["bare_ms"] * 1e3
        met = verdict(ratio, added_us)
        lines.append(
            f"| {name}: {models[name][0]} | {result['bare_ms']:.4f} ms | {result['harness_ms']:.4f} ms | "
            f"{ratio.median_ratio - 1:+.2%} ({ratio.bootstrap_ci_low - 1:+.2%} … {ratio.bootstrap_ci_high - 1:+.2%})"
            " | "
            f"{added_us:+.2f} µs | {result['runs']} | {met} |"
        )
    spread = [r for r, _, _ in pairs]
    lines += [
        "",
        f"Resolution of a ratio: two fresh sessions of the small model, side by side, {A_A_PAIRS} times (median ratio",
        "and its unwidened 95 % bootstrap interval). Sessions of one model differ systematically (memory layout), by",
        "more than the bootstrap interval admits; hence ratio intervals are widened by ±5 % (`SESSION_RESOLUTION`).",
        "",
        "| pair | median ratio | bootstrap 95 % CI |",
        "|---|---|---|",
        *(f"| {i + 1} | {r:.4f} | [{low:.4f}, {high:.4f}] |" for i, (r, low, high) in enumerate(pairs)),
        "",
        f"Largest deviation from 1: {max(abs(r - 1) for r in spread):.2%}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        models = {
            "small": ("conv 3→8, 16×16 input", export(conv_net(8, 1), Path(folder) / "small.onnx", 16)),
            "larger": ("4 convs ×64, 56×56 input", export(conv_net(64, 4), Path(folder) / "larger.onnx", 56)),
        }
        overheads = {name: overhead(path, *SCHEDULE[name]) for name, (_, path) in models.items()}
        pairs = session_pairs(models["small"][1])
    text = report(models, overheads, pairs)
    RESULTS.write_text("# Benchmark results: edgekd bench\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
