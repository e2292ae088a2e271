"""One prepared check for a machine with a CUDA GPU (issue 13), under 8 minutes on one GPU.

1. Train a recipe's steps on CUDA twice — fp32 and bf16 autocast (`runtime.precision`) — with the
   epochs cut down to fit the budget; per step: accuracy and seconds.
2. Time the trained teacher and the (float) student with the torch backend: host latency and
   device time from CUDA events, side by side in one process (paired mode).
3. Time the exported ONNX files in deployment mode — each alone in a fresh process per round —
   on every GPU execution provider this onnxruntime has (CUDA, TensorRT), and with the TensorRT
   backend where the tensorrt package imports.
Each part records its error and the check goes on, so one run tells everything that works.

    python bench/gpu_check.py                          # on the GPU machine: writes its RESULTS.md section
    python bench/gpu_check.py --device cpu --smoke     # the same path on CPU, tiny (checks the script)

Results: runs/gpu-check/summary.json (and the RESULTS.md section, on CUDA only)."""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import onnxruntime as ort
import torch

from common import machine, replace_section, stamp
from edgekd.bench import BenchResult, benchmark
from edgekd.quant.graph import quant_schedule, to_float
from edgekd.recipe import load_recipe
from edgekd.run import Run

ROOT = Path(__file__).parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
BATCHES = (1, 64)
GPU_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}
# Epochs that fit 8 minutes on one GPU for the Fashion-MNIST recipe (both precisions), and that
# finish in seconds for the CPU smoke path on a data subset.
FULL = {"teacher": 3, "recover": 1, "limit": None}
SMOKE = {"teacher": 1, "recover": 1, "limit": 512}


def recipe_for(args: argparse.Namespace, precision: str) -> Run:
    sizes = SMOKE if args.smoke else FULL
    recipe = args.recipe or (ROOT / "recipes" / ("fashion-mnist.yaml" if FASHION.is_dir() else "quickstart.yaml"))
    overrides = [
        f"device={args.device}", f"runtime.precision={precision}", f"workdir={args.workdir / precision}",
        f"teacher.train.epochs={sizes['teacher']}", "gates={}",
    ]
    if sizes["limit"]:
        overrides.append(f"data.limit={sizes['limit']}")
    loaded = load_recipe(recipe, overrides)
    stages = [stage for stage in loaded.model_dump(mode="json")["stages"] if "bench" not in stage]
    for stage in stages:
        if "recover" in stage:
            stage["recover"] = {**(stage["recover"] or {}), "epochs": sizes["recover"]}
    raw = loaded.model_dump(mode="json")
    raw["stages"] = stages
    return Run(load_recipe(raw))


def train(args: argparse.Namespace, precision: str, summary: dict[str, Any]) -> Run:
    run = recipe_for(args, precision)
    started = time.perf_counter()
    report = run.execute().to_json()
    summary[f"train {precision}"] = {
        "seconds": time.perf_counter() - started,
        "teacher_accuracy": report["teacher"]["accuracy"],
        "steps": [
            {k: step.get(k) for k in ("stage", "step", "accuracy", "seconds", "recovery_seconds")} for step in report["steps"]
        ],
        "onnx": {kind: entry.get("accuracy") for kind, entry in report["student"].get("onnx", {}).items()},
    }
    return run


def torch_timing(run: Run) -> dict[str, Any]:
    """Teacher and float student side by side, eager torch; device time from CUDA events on a GPU."""
    student = to_float(run.student) if quant_schedule(run.student) is not None else run.student
    shape = {"input": tuple(run.example_input().shape)}
    result = benchmark(
        [run.teacher.eval(), student.eval()], mode="paired", backend="torch", batch_sizes=BATCHES, input_shapes=shape,
        memory=False,
    )  # fmt: skip
    return cases(result, device=True)


def onnx_files(run: Run) -> list[Path]:
    names = ["teacher.onnx", "student.onnx", "student.int8.onnx"]
    return [run.workdir / name for name in names if (run.workdir / name).is_file()]


def deployed_timing(run: Run, args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """Deployment mode on each GPU provider there is (the CPU provider on the smoke path)."""
    available = ort.get_available_providers()
    providers = [alias for name, alias in GPU_PROVIDERS.items() if name in available]
    if args.device == "cpu":
        providers = ["cpu"]
    summary["onnxruntime providers"] = available
    for provider in providers:
        section(summary, f"onnxruntime {provider}", lambda p=provider: cases(benchmark(
            onnx_files(run), providers=(p,), rounds=args.rounds, batch_sizes=BATCHES, min_duration_s=args.seconds,
            memory=False, roofline=False,
        )))  # fmt: skip
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        summary["tensorrt backend"] = f"not run: {exc}"
        return
    section(summary, "tensorrt backend", lambda: cases(benchmark(
        onnx_files(run), backend="tensorrt", rounds=args.rounds, batch_sizes=BATCHES, min_duration_s=args.seconds,
        memory=False, roofline=False, cache_dir=args.workdir / "engines",
    )))  # fmt: skip


def cases(result: BenchResult, device: bool = False) -> dict[str, Any]:
    """Per model and batch: median ms (deployment: of per-process medians), device median, finding, ratio."""
    out: dict[str, Any] = {"mode": result.mode}
    reference = result.models[0].name
    for case in result.cases:
        entry: dict[str, Any] = {"median_ms": case.median_ms}
        if device and case.device_latency:
            entry["device_median_ms"] = case.device_latency.median
        if getattr(case, "finding", None):
            entry["finding"] = case.finding
        if case.model != reference:
            entry[f"speedup_vs_{reference}"] = result.ratio(case.model, case.batch, case.condition).inverted().median_ratio
        out[f"{case.model} @ {case.batch}"] = entry
    return out


def attempt(summary: dict[str, Any], name: str, work: Callable[[], Any]) -> Any:
    """Run one part and return what it gives; an error is recorded under `name` and the check goes on."""
    started = time.perf_counter()
    try:
        return work()
    except Exception as exc:  # a check script reports every failure, it does not stop at the first
        summary[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
        return None
    finally:
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)


def section(summary: dict[str, Any], name: str, work: Callable[[], Any]) -> None:
    """Run one part and record what it gives under `name` (or its error)."""
    result = attempt(summary, name, work)
    if result is not None:
        summary[name] = result


def environment(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "machine": machine(),
        "date": stamp(),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "onnxruntime": ort.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the smoke path)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and epochs: checks the script, not the GPU")
    parser.add_argument("--recipe", type=Path, help="default: recipes/fashion-mnist.yaml if its data is installed, else quickstart")
    parser.add_argument("--workdir", type=Path, default=Path("runs/gpu-check"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per process and batch size")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible to torch here; use --device cpu --smoke to check the script itself")
    started = time.perf_counter()
    summary: dict[str, Any] = {"environment": environment(args)}
    runs = {precision: attempt(summary, f"train {precision}", lambda p=precision: train(args, p, summary)) for precision in ("fp32", "bf16")}
    if runs["fp32"] is not None:
        section(summary, "torch", lambda: torch_timing(runs["fp32"]))
        deployed_timing(runs["fp32"], args, summary)
    summary["seconds"] = time.perf_counter() - started
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))
    if args.device.startswith("cuda") and not args.smoke:
        replace_section("GPU check (issue 13)", f"`python bench/gpu_check.py`, {summary['seconds'] / 60:.1f} minutes.\n\n```json\n{json.dumps(summary, indent=1, default=str)}\n```\n")


if __name__ == "__main__":
    main()
