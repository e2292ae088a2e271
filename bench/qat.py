"""Quantization-aware distillation vs post-training quantization on Fashion-MNIST (issue 4's benchmark).

One trained fp32 ResNet (`resnet_s`), then four ONNX files, all measured by ONNX Runtime:
  fp32                 the exported float model
  edgekd PTQ           qat stage with recover epochs 0 (calibration only), ort-x86 profile
  edgekd QAT+KD        qat stage + distillation from the fp32 model, ort-x86 profile
  ORT quantize_static  onnxruntime.quantization (after quant_pre_process), QDQ, QUInt8
                       activations / QInt8 per-channel weights, on the same calibration batches
Test accuracy (whole test set) and latency (2 threads, batch 1 and 64, interleaved, medians).

    python bench/qat.py          # about 30–50 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import edgekd
import edgekd.export  # noqa: F401  (registers the export stage)
import edgekd.quant  # noqa: F401  (registers the qat stage)
from common import machine, stamp
from edgekd.data import DataBundle, load_data
from edgekd.export.runtime import optimized_op_counts, ort_quantize_static, run, session
from edgekd.recipe import load_recipe
from edgekd.run import Run

RESULTS = Path(__file__).with_name("RESULTS_qat.md")
MODEL = "resnet_s(width=16)"
BATCH_SIZE = 128
CALIBRATION_BATCHES = 32
THREADS = 2


def recipe(workdir: Path, teacher: dict, stages: list) -> dict:
    return {
        "name": "qat-bench",
        "seed": 0,
        "device": "cpu",
        "workdir": str(workdir),
        "data": {"dataset": "fashion-mnist", "batch_size": BATCH_SIZE},
        "teacher": teacher,
        "student": "teacher",
        "stages": stages,
    }


def qat_stages(epochs: int) -> list:
    return [
        {"qat": {"profile": "ort-x86", "calibration_batches": CALIBRATION_BATCHES}, "recover": {"epochs": epochs, "lr": 0.001}},
        {"export": {"opset": 17}},
    ]


def ort_static(fp32: Path, target: Path, qat_recipe: dict) -> None:
    """ONNX Runtime's own quantizer on the calibration batches our qat stage used (same loader, same seed)."""
    seed = Run(load_recipe(qat_recipe)).phase_seed(0, 1)
    data = load_data("fashion-mnist", seed=0)
    loader = data.loader("train", BATCH_SIZE, shuffle=True, seed=seed)
    ort_quantize_static(fp32, target, [x.numpy() for x, _ in islice(loader, CALIBRATION_BATCHES)])


def latencies(paths: dict[str, Path], batch: int, seconds: float) -> dict[str, float]:
    """Median ms per run; models take turns so background load hits them alike."""
    sessions = {name: session(path, threads=THREADS) for name, path in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for sess in sessions.values():
        sess.run(None, {"input": x})  # warm-up
    while min(sum(t) for t in times.values()) < seconds:
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"input": x})
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def fused(path: Path) -> str:
    counts = optimized_op_counts(path)
    convs = counts["QLinearConv"] + counts["Conv"]
    return f"{counts['QLinearConv']}/{convs} QLinearConv, {counts['DequantizeLinear']} DQ left"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per model and batch size")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-qat"))
    parser.add_argument("--reuse-fp32", action="store_true", help="reuse the fp32 model already trained in --workdir")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    started = time.time()

    train = {"model": MODEL, "train": {"epochs": args.epochs, "lr": 0.05}}
    fp32_report = args.workdir / "fp32" / "report.json"
    if args.reuse_fp32 and fp32_report.is_file():
        fp32_run = json.loads(fp32_report.read_text())
    else:
        fp32_run = edgekd.compress(recipe(args.workdir / "fp32", train, [{"export": {"opset": 17}}]), quiet=True).to_json()
    teacher = {"model": MODEL, "checkpoint": str(next((args.workdir / "fp32").glob("teacher-*.pt")))}
    print(f"fp32 trained: {fp32_run['student']['onnx']['fp32']['accuracy']:.4f} ({time.time() - started:.0f} s)", flush=True)
    ptq_run = edgekd.compress(recipe(args.workdir / "ptq", teacher, qat_stages(0)), quiet=True).to_json()
    print(f"PTQ: {ptq_run['student']['onnx']['int8']['accuracy']:.4f} ({time.time() - started:.0f} s)", flush=True)
    qat_recipe = recipe(args.workdir / "qat", teacher, qat_stages(args.qat_epochs))
    qat_run = edgekd.compress(qat_recipe, quiet=True).to_json()
    print(f"QAT: {qat_run['student']['onnx']['int8']['accuracy']:.4f} ({time.time() - started:.0f} s)", flush=True)
    fp32_path = args.workdir / "fp32" / fp32_run["student"]["onnx"]["fp32"]["path"]
    static_path = args.workdir / "ort_static" / "student.int8.onnx"
    static_path.parent.mkdir(parents=True, exist_ok=True)
    ort_static(fp32_path, static_path, qat_recipe)

    data = load_data("fashion-mnist", seed=0)
    paths = {
        "fp32": fp32_path,
        "edgekd PTQ (ort-x86)": args.workdir / "ptq" / ptq_run["student"]["onnx"]["int8"]["path"],
        f"edgekd QAT+KD (ort-x86, {args.qat_epochs} epochs)": args.workdir / "qat" / qat_run["student"]["onnx"]["int8"]["path"],
        "ORT quantize_static": static_path,
    }
    labels = data.test.tensors[1].numpy()
    predicted = {name: predictions(path, data) for name, path in paths.items()}
    accuracy = {name: float((p == labels).mean()) for name, p in predicted.items()}
    speed = {batch: latencies(paths, batch, args.seconds) for batch in (1, 64)}
    write_results(args, paths, accuracy, paired(predicted, labels), speed, fp32_run, time.time() - started)


def predictions(path: Path, data: DataBundle) -> np.ndarray:
    sess = session(path)
    return np.concatenate([run(sess, x).argmax(1) for x, _ in data.loader("test", 512)])


def paired(predicted: dict[str, np.ndarray], labels: np.ndarray) -> str:
    """QAT against each PTQ on the same images: a sign test over the images only one gets right."""
    qat = next(p for name, p in predicted.items() if name.startswith("edgekd QAT")) == labels
    lines = []
    for name in ("edgekd PTQ (ort-x86)", "ORT quantize_static"):
        other = predicted[name] == labels
        wins, losses = int((qat & ~other).sum()), int((~qat & other).sum())
        n, k = wins + losses, min(wins, losses)
        p_value = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
        lines.append(f"- QAT+KD vs {name}: right where it is wrong on {wins} test images, wrong where it is right on {losses} (sign test p = {p_value:.2f})")
    return "\n".join(lines)


def write_results(
    args: argparse.Namespace,
    paths: dict[str, Path],
    accuracy: dict[str, float],
    comparison: str,
    speed: dict[int, dict[str, float]],
    fp32_run: dict,
    elapsed: float,
) -> None:
    fp32_acc, fp32_64 = accuracy["fp32"], speed[64]["fp32"]
    rows = []
    for name, path in paths.items():
        detail = "—" if name == "fp32" else fused(path)
        rows.append(
            f"| {name} | {accuracy[name] * 100:.2f} | {(accuracy[name] - fp32_acc) * 100:+.2f} | {speed[1][name]:.3f} | "
            f"{speed[64][name]:.2f} | {fp32_64 / speed[64][name]:.2f}× | {path.stat().st_size / 1024:.0f} | {detail} |"
        )
    qat_name = next(n for n in paths if n.startswith("edgekd QAT"))
    ours, theirs = speed[64][qat_name], speed[64]["ORT quantize_static"]
    goals = [
        ("QAT+KD int8 within 0.3 points of fp32", (fp32_acc - accuracy[qat_name]) * 100 <= 0.3,
         f"{(accuracy[qat_name] - fp32_acc) * 100:+.2f} points"),
        ("QAT+KD ahead of both PTQs",
         accuracy[qat_name] > max(accuracy["edgekd PTQ (ort-x86)"], accuracy["ORT quantize_static"]),
         f"{accuracy[qat_name] * 100:.2f} vs {accuracy['edgekd PTQ (ort-x86)'] * 100:.2f} / {accuracy['ORT quantize_static'] * 100:.2f}"),
        ("int8 ≥ 2.5× faster than fp32 at batch 64", fp32_64 / ours >= 2.5, f"{fp32_64 / ours:.2f}×"),
        ("no slower than ORT quantize_static (within 10%)", ours <= theirs * 1.1, f"{ours:.2f} ms vs {theirs:.2f} ms"),
    ]
    goal_rows = "\n".join(f"| {goal} | {'met' if ok else '**not met**'} | {value} |" for goal, ok, value in goals)
    body = f"""## Quantization-aware distillation (issue 4)

Machine: {machine()}, {os.cpu_count()} cores (shared with other work while this ran). Date: {stamp()}.
Versions: onnxruntime {ort.__version__}, onnx {onnx.__version__}, Python {sys.version.split()[0]}.
Command: `python bench/qat.py --epochs {args.epochs} --qat-epochs {args.qat_epochs}{" --reuse-fp32" if args.reuse_fp32 else ""}` ({elapsed / 60:.0f} minutes{", fp32 training not included" if args.reuse_fp32 else ""}).

Fashion-MNIST (54k train / 6k val / 10k test), `{MODEL}` ({fp32_run['teacher']['macs']:,} MACs) trained
{args.epochs} epochs (SGD lr 0.05, cosine, batch {BATCH_SIZE}) = the fp32 model and the teacher. PTQ and
quantize_static calibrate on the same {CALIBRATION_BATCHES} training batches; QAT+KD then distills
from the fp32 model for {args.qat_epochs} epochs (lr 0.001). Accuracy: ONNX Runtime on the test set.
Latency: ONNX Runtime CPU, {THREADS} intra-op threads, `session.intra_op.allow_spinning=0`, all graph
optimizations, models interleaved, median over ≥ {args.seconds:g} s each.

| model | test acc % | Δ vs fp32 | ms, batch 1 | ms, batch 64 | speed-up b64 | file KiB | ORT fused graph |
|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Paired on the 10k test images (one seed; the standard error of a single accuracy here is about 0.3 points):
{comparison}

| goal | status | measured |
|---|---|---|
{goal_rows}
"""
    RESULTS.write_text(body)
    print(body)


if __name__ == "__main__":
    main()
