"""Latency and memory profiles you can trust: `edgekd bench` and its Python API.

    from edgekd.bench import benchmark, render
    result = benchmark(["teacher.onnx", "student.int8.onnx"], batch_sizes=(1, 64), threads=2, spinning="both")
    render(result, rich.console.Console())
    result.case("student.int8", 64).median_ms           # median of the per-process medians
    result.case("student.int8", 64).finding             # e.g. 'bimodal: 4/6 processes at 6.00 ms, 2/6 at 3.40 ms'
    result.ratio("student.int8", 64).inverted()         # teacher / student per round: median, CI over rounds
    result.to_json()                                    # JSON-able dict, schema "edgekd.bench/1"

`benchmark` runs in deployment mode by default: each model alone in a fresh process per round,
with ONNX Runtime's default session options but for what is set (`threads`, `spinning`).
`mode="paired"` times the models interleaved in this one process instead (A/B comparisons,
nn.Modules). `edgekd bench` (edgekd/cli/bench.py) is the command over it."""

from edgekd.bench.backends import Backend, BackendOptions, Runner, backends
from edgekd.bench.environment import environment
from edgekd.bench.harness import benchmark
from edgekd.bench.render import render
from edgekd.bench.result import SCHEMA, BenchResult, CaseResult, RatioResult

__all__ = [
    "SCHEMA",
    "Backend",
    "BackendOptions",
    "BenchResult",
    "CaseResult",
    "RatioResult",
    "Runner",
    "backends",
    "benchmark",
    "environment",
    "render",
]
