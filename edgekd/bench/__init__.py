"""Latency and memory profiles you can trust: `edgekd bench` and its Python API.

    from edgekd.bench import benchmark, render
    result = benchmark(["student.int8.onnx", "teacher.onnx"], batch_sizes=(1, 64), threads=2)
    render(result, rich.console.Console())
    result.ratio("teacher", 64)    # median latency teacher / student at batch 64, with its CI
    result.to_json()               # JSON-able dict, schema "edgekd.bench/1"

`edgekd bench` (edgekd/cli/bench.py) is the command over it."""

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
