"""The `edgekd bench` command: parses the arguments, calls `api.bench()`, prints the tables,
writes the JSON. Registered by the main CLI with `app.command("bench")(bench_command)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekd import api, terminal
from edgekd.bench.inputs import parse_input_shapes
from edgekd.bench.render import render
from edgekd.errors import InputError
from edgekd.files import output_file, write_json


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,64' → (1, 64)."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(size < 1 for size in sizes):
        raise InputError(f"--batch {text!r} is not a comma-separated list of positive integers, e.g. 1,64")
    return sizes


def bench_command(
    models: Annotated[list[Path], typer.Argument(help="ONNX files; the first is the reference for latency ratios.")],
    mode: Annotated[
        str,
        typer.Option(
            help="deployment: each model alone in a fresh process per round, as deployed (default); "
            "paired: all models interleaved in this process (tight intervals for A/B comparisons)."
        ),
    ] = "deployment",
    rounds: Annotated[int, typer.Option(help="Deployment mode: rounds of fresh processes (6 give a 96.9% CI).")] = 6,
    backend: Annotated[str, typer.Option(help="onnxruntime, tensorrt, or your Backend class as pkg.module:Class.")] = (
        "onnxruntime"
    ),
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated, e.g. 1,64.")] = "1",
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads (default: one per physical core).")] = None,
    warmup: Annotated[
        Optional[float], typer.Option(help="Warm-up seconds per model and batch (default 0.5 deployment, 0.2 paired).")
    ] = None,
    min_iterations: Annotated[int, typer.Option(help="Minimum timed runs per model.")] = 20,
    min_duration: Annotated[float, typer.Option(help="Minimum measured seconds per model.")] = 1.0,
    input_shape: Annotated[
        Optional[list[str]],
        typer.Option(help="Shape of an input with dynamic dims besides batch, e.g. x=1x3x224x224 (repeatable)."),
    ] = None,
    inputs: Annotated[Optional[Path], typer.Option(help="Real inputs: an .npz with one array per input name.")] = None,
    providers: Annotated[str, typer.Option(help="ONNX Runtime execution providers in order: cpu, cuda, tensorrt.")] = (
        "cpu"
    ),
    graph_optimization: Annotated[str, typer.Option(help="disable, basic, extended or all.")] = "all",
    spinning: Annotated[
        Optional[str],
        typer.Option(
            help="ORT thread spinning: on (ORT's default), off, stop (spin only during a run); in deployment mode "
            "several (on,off or both), each timed in its own processes. Default: on (deployment), stop (paired)."
        ),
    ] = None,
    precision: Annotated[str, typer.Option(help="TensorRT 10 builder precision: auto, fp32, fp16, int8.")] = "auto",
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="TensorRT engine/timing cache folder (default ~/.cache/edgekd/tensorrt).")
    ] = None,
    profile: Annotated[bool, typer.Option("--profile", help="Show the ten slowest nodes per model and batch.")] = False,
    memory: Annotated[bool, typer.Option(help="Measure peak RSS per model and batch in fresh processes.")] = True,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the full results (raw latencies too).")
    ] = None,
) -> None:
    """Latency and memory of ONNX models as deployed — each alone in a fresh process per round — with
    ratios to the first model and confidence intervals over rounds.

    Example:  edgekd bench student.int8.onnx teacher.onnx --batch 1,64 --threads 2 --spinning both --json bench.json
    """
    if json_path:  # refused now, not after minutes of timing
        output_file(json_path, "--json")
    result = api.bench(
        models,
        mode=mode,
        rounds=rounds,
        backend=backend,
        batch_sizes=parse_batch_sizes(batch),
        threads=threads,
        warmup_s=warmup,
        min_iterations=min_iterations,
        min_duration_s=min_duration,
        input_shapes=parse_input_shapes(input_shape or []),
        inputs=inputs,
        profile=profile,
        memory=memory,
        providers=tuple(p.strip() for p in providers.split(",") if p.strip()),
        graph_optimization=graph_optimization,
        spinning=spinning,
        precision=precision,
        cache_dir=cache_dir,
    )
    render(result, terminal.console())
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(json_path, result.to_json())
        terminal.console().print(f"results: {json_path}")
