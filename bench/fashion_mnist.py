"""The headline benchmark (issue 9): does edgekd deliver a small, fast, accurate model on Fashion-MNIST,
compared with what a user would otherwise do?

Rows, every one an ONNX file measured by ONNX Runtime on the 10k test images and timed side by side
in one process (2 threads, interleaved, batch 1 and 64):
  1. the teacher, fp32 — `recipes/fashion-mnist.yaml`'s teacher, trained here (or reused from --workdir);
  2. the teacher + ONNX Runtime's own PTQ (quantize_static, QDQ, u8 activations, s8 per-channel weights);
  3. the student pruned as the recipe prunes it, recovered with cross-entropy only, fp32;
  4. the same, recovered with distillation from the teacher, fp32;
  5. the same + quantization-aware distillation, int8 — the whole recipe, as `edgekd compress
     recipes/fashion-mnist.yaml` runs it (less its bench stage: this script times every row itself);
and, for comparison, the by-hand pipeline (one-shot pruning to 1/3 of the MACs, 4 epochs of
cross-entropy fine-tuning, then quantize_static) and a trade-off curve: the distilled student pruned
further (extra prune + distillation stages appended to row 4's run), each point in fp32 and int8.

Runs reuse each other's finished steps (`--resume` extends a run with appended stages), and the
script itself resumes: run it again after an interruption and finished runs are not repeated.

    python bench/fashion_mnist.py                 # about 50 minutes on 2 CPU cores
    python bench/fashion_mnist.py --curve 0.2     # fewer curve points
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import time
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

import edgekd
from common import machine, replace_section, stamp
from edgekd.bench import BenchResult, benchmark
from edgekd.data import load_data
from edgekd.export.runtime import onnx_accuracy, ort_quantize_static

RECIPE = Path(__file__).parents[1] / "recipes" / "fashion-mnist.yaml"
PLOT = Path(__file__).with_name("fashion_mnist.png")
THREADS = 2
BATCHES = (1, 64)
CALIBRATION_BATCHES = 32
BY_HAND = {"target_macs": 0.33, "epochs": 4}


class Bench:
    """The recipe, its runs (each in its own workdir under --workdir) and the ONNX files they give."""

    def __init__(self, workdir: Path, recipe: Path):
        self.workdir = workdir
        self.recipe = yaml.safe_load(recipe.read_text())
        self.recipe.pop("gates")  # the goals are judged below, on the side-by-side measurements
        self.prune, self.qat, self.export, _bench = self.recipe["stages"]
        self.data = load_data(self.recipe["data"]["dataset"], seed=self.recipe["seed"])
        self.timings: dict[str, float] = {}

    def compress(self, name: str, stages: list[dict], *, extends: str | None = None, teacher: dict | None = None) -> dict[str, Any]:
        """Run (or resume) `stages` in workdir `name`; `extends` copies a finished run whose stages
        are a prefix of these, so only the appended stages run."""
        target = self.workdir / name
        if extends and not (target / "progress.json").is_file():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.workdir / extends, target, ignore=shutil.ignore_patterns("*.onnx", "report*"))
        recipe = {**copy.deepcopy(self.recipe), "workdir": str(target), "stages": stages}
        if teacher:
            recipe["teacher"] = teacher
        started = time.perf_counter()
        report = edgekd.compress(recipe, resume=True, quiet=True)
        self.timings[name] = time.perf_counter() - started
        print(f"{name}: {report['student']['accuracy']:.2%}, {report['student']['macs']:,} MACs ({self.timings[name] / 60:.1f} min)", flush=True)
        return report

    def exported(self, name: str) -> Path:
        """The fp32 ONNX file of run `name`'s final student (`edgekd export RUN`)."""
        path = self.workdir / name / "student.onnx"
        if not path.is_file():
            edgekd.export_run(self.workdir / name)
        return path

    def quantize_static(self, fp32: Path, target: Path) -> Path:
        if not target.is_file():
            loader = self.data.loader("train", self.recipe["data"]["batch_size"], shuffle=True, seed=self.recipe["seed"])
            ort_quantize_static(fp32, target, [x.numpy() for x, _ in islice(loader, CALIBRATION_BATCHES)])
        return target

    def accuracy(self, path: Path) -> float:
        return onnx_accuracy(path, self.data.loader("test", 512))


def deeper(prune: dict, target: float) -> dict:
    """A further prune stage to `target` of the teacher's MACs, recovered like the recipe's."""
    return {"prune": {**prune["prune"], "target_macs": target, "steps": 1}, "recover": prune["recover"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="a recipe whose stages are prune, qat, export, bench")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-fashion-mnist"))
    parser.add_argument("--curve", default="0.2,0.12", help="further MACs fractions for the trade-off curve ('' for none)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per model and batch size")
    args = parser.parse_args()
    started = time.perf_counter()
    bench = Bench(args.workdir, args.recipe)
    prune, qat, export = bench.prune, bench.qat, bench.export

    teacher_run = bench.compress("teacher", [export])
    teacher = {"model": bench.recipe["teacher"]["model"], "checkpoint": str(next((args.workdir / "teacher").glob("teacher-*.pt")))}
    teacher_onnx = args.workdir / "teacher" / "teacher.onnx"
    ce_prune = {**prune, "recover": {**prune["recover"], "alpha": 0.0}}
    runs = {
        "ce": bench.compress("ce", [ce_prune], teacher=teacher),
        "kd": bench.compress("kd", [prune], teacher=teacher),
    }
    runs["kd-int8"] = bench.compress("kd-int8", [prune, qat, export], extends="kd", teacher=teacher)
    by_hand_stage = {"prune": {"target_macs": BY_HAND["target_macs"], "steps": 1}, "recover": {"epochs": BY_HAND["epochs"], "alpha": 0.0}}
    runs["by-hand"] = bench.compress("by-hand", [by_hand_stage], teacher=teacher)

    curve_targets = [float(t) for t in args.curve.split(",") if t]
    chain, previous = [prune], "kd"
    for target in curve_targets:
        chain = [*chain, deeper(prune, target)]
        runs[f"kd-{target}"] = bench.compress(f"kd-{target}", chain, extends=previous, teacher=teacher)
        runs[f"kd-{target}-int8"] = bench.compress(f"kd-{target}-int8", [*chain, qat, export], extends=f"kd-{target}", teacher=teacher)
        previous = f"kd-{target}"

    # label → (short name for the plot, ONNX file, the run's entry with its MACs and parameters)
    rows = {
        "1 teacher fp32": ("1", teacher_onnx, teacher_run["teacher"]),
        "2 teacher + ORT PTQ int8": ("2", bench.quantize_static(teacher_onnx, args.workdir / "teacher" / "teacher.ort-ptq.onnx"), teacher_run["teacher"]),
        "3 pruned, CE recovery, fp32": ("3", bench.exported("ce"), runs["ce"]["student"]),
        "4 pruned, KD recovery, fp32": ("4", bench.exported("kd"), runs["kd"]["student"]),
        "5 edgekd recipe: pruned + KD + QAT-KD, int8": ("5", args.workdir / "kd-int8" / "student.int8.onnx", runs["kd-int8"]["student"]),
        "by hand: one-shot prune, CE, ORT PTQ int8": (
            "by hand", bench.quantize_static(bench.exported("by-hand"), args.workdir / "by-hand" / "student.ort-ptq.onnx"), runs["by-hand"]["student"],
        ),
    }
    for target in curve_targets:
        entry = runs[f"kd-{target}"]["student"]
        rows[f"curve {target:.0%}: KD fp32"] = (f"{target:.0%}", bench.exported(f"kd-{target}"), entry)
        rows[f"curve {target:.0%}: KD + QAT-KD int8"] = (f"{target:.0%}", args.workdir / f"kd-{target}-int8" / "student.int8.onnx", entry)
    files = {label: path for label, (_, path, _) in rows.items()}
    structure = {label: (entry["macs"], entry["params"]) for label, (_, _, entry) in rows.items()}
    short = {label: name for label, (name, _, _) in rows.items()}

    accuracy = {label: bench.accuracy(path) for label, path in files.items()}
    measuring = time.perf_counter()
    measured = measure(files, args.seconds)
    elapsed = time.perf_counter() - started
    write_results(args, bench, files, accuracy, structure, measured, elapsed, time.perf_counter() - measuring)
    plot(short, accuracy, measured)


def measure(files: dict[str, Path], seconds: float) -> BenchResult:
    """Every file side by side: one process, 2 threads, interleaved; peak RSS in fresh processes."""
    staged = files[next(iter(files))].parents[1] / "side-by-side"
    staged.mkdir(exist_ok=True)
    named = []
    for index, path in enumerate(files.values()):  # file names become the harness's model names
        named.append(staged / f"m{index}.onnx")
        shutil.copyfile(path, named[-1])
    return benchmark(named, batch_sizes=BATCHES, threads=THREADS, min_duration_s=seconds, memory=True, roofline=False)


def write_results(
    args: argparse.Namespace, bench: Bench, files: dict[str, Path], accuracy: dict[str, float],
    structure: dict[str, tuple[int, int]], measured: BenchResult, elapsed: float, timing_s: float,
) -> None:
    labels = list(files)
    reference = labels[0]
    size = {label: path.stat().st_size for label, path in files.items()}
    rows = []
    for index, label in enumerate(labels):
        name = f"m{index}"
        cells = []
        for batch in BATCHES:
            latency = measured.case(name, batch).latency
            cells.append(f"{latency.median:.3f} / {latency.p90:.3f}")
        speedups = []
        for batch in BATCHES:
            if index == 0:
                speedups.append("1×")
            else:
                ratio = measured.ratio(name, batch)
                speedups.append(f"{1 / ratio.median_ratio:.2f}× ({1 / ratio.ci_high:.2f}–{1 / ratio.ci_low:.2f})")
        memory = measured.case(name, BATCHES[-1]).memory or {}
        macs, params = structure[label]
        rows.append(
            f"| {label} | {accuracy[label]:.2%} | {macs / 1e6:.2f} M | {params:,} | {size[label] / 1024:.1f} KiB "
            f"({size[reference] / size[label]:.1f}× smaller) | {cells[0]} | {cells[1]} | {speedups[0]} | {speedups[1]} | "
            f"{memory.get('peak_rss_mb', float('nan')):.0f} |"
        )
    row5 = labels[4]
    gap = (accuracy[reference] - accuracy[row5]) * 100
    speed64 = 1 / measured.ratio("m4", 64).median_ratio
    smaller = size[reference] / size[row5]
    by_hand = labels[5]
    hand_gap = (accuracy[reference] - accuracy[by_hand]) * 100
    hand_speed = 1 / measured.ratio("m5", 64).median_ratio
    goals = [
        ("row 5 within 0.5 points of the teacher", gap <= 0.5, f"{-gap:+.2f} points"),
        ("row 5 ≥ 6× faster than the teacher at batch 64", speed64 >= 6, f"{speed64:.2f}×"),
        ("row 5 ≥ 8× smaller file", smaller >= 8, f"{smaller:.1f}×"),
        ("row 5 better than by hand on accuracy and speed at once", gap < hand_gap and speed64 > hand_speed,
         f"{-gap:+.2f} vs {-hand_gap:+.2f} points, {speed64:.2f}× vs {hand_speed:.2f}×"),
    ]
    goal_rows = "\n".join(f"| {goal} | {'met' if ok else '**not met**'} | {value} |" for goal, ok, value in goals)
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "torch-pruning", "onnx", "onnxruntime"))
    minutes = {name: f"{seconds / 60:.1f}" for name, seconds in bench.timings.items()}
    recipe = bench.recipe
    body = f"""Machine: {machine()}, {os.cpu_count()} cores. Date: {stamp()}. Versions: {versions}, Python {sys.version.split()[0]}.
Command: `python bench/fashion_mnist.py --curve {args.curve or "''"}` — {elapsed / 60:.0f} minutes in all
(runs in minutes: {", ".join(f"{k} {v}" for k, v in minutes.items())}; a run that was already finished in the workdir shows its resume time).

Fashion-MNIST (54k train / 6k val / 10k test, 28×28). Teacher `{recipe["teacher"]["model"]}` trained
{recipe["teacher"]["train"]["epochs"]} epochs (SGD lr {recipe["teacher"]["train"]["lr"]}, cosine, batch {recipe["data"]["batch_size"]}).
Rows 3–5 prune as `recipes/fashion-mnist.yaml` does: `{yaml.safe_dump(bench.prune["prune"], default_flow_style=True).strip()}`, each
step recovered {bench.prune["recover"]["epochs"]} epochs (row 3 with α=0, cross-entropy only; rows 4–5 with α={recipe["distill"]["alpha"]},
T={recipe["distill"]["temperature"]}, lr {recipe["distill"]["lr"]}, cached teacher logits); row 5 then runs
`{yaml.safe_dump(bench.qat, default_flow_style=True).strip()}`. By hand: torch-pruning one-shot to
{BY_HAND["target_macs"]:.0%} MACs (edgekd's pruner, no rounding), {BY_HAND["epochs"]} epochs of cross-entropy, then ONNX Runtime's
quantize_static. Both ORT PTQ rows calibrate on the same {CALIBRATION_BATCHES} training batches.

Accuracy: ONNX Runtime on the exported file, all 10k test images. Latency: ONNX Runtime CPU, {THREADS} intra-op
threads, all graph optimizations, spinning stopped, all {len(files)} files interleaved in one process
(`edgekd.bench.benchmark`, ≥ {args.seconds:g} s per file and batch; {timing_s / 60:.1f} minutes with the memory probes);
milliseconds as median / p90; speedup = teacher median / row median with its 95% CI; peak RSS of a fresh
process running the file at batch 64.

| row | test acc (ORT) | MACs | params | ONNX file | ms b1 (median / p90) | ms b64 (median / p90) | speedup b1 | speedup b64 | peak RSS MB |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

| goal | status | measured |
|---|---|---|
{goal_rows}

![accuracy vs latency]({PLOT.name})
"""
    replace_section("Headline: Fashion-MNIST, teacher vs what edgekd delivers (issue 9)", body)
    print(body)


def plot(short: dict[str, str], accuracy: dict[str, float], measured: BenchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    labels = list(short)
    for index, label in enumerate(labels):
        latency = measured.case(f"m{index}", 64).latency.median
        axis.scatter(latency, accuracy[label] * 100, marker="o" if "int8" in label else "s", s=40)
        axis.annotate(short[label], (latency, accuracy[label] * 100), textcoords="offset points", xytext=(5, 4), fontsize=8)
    curve = [i for i, label in enumerate(labels) if label.startswith(("4 ", "5 ", "curve"))]
    for precision in ("fp32", "int8"):
        points = sorted((measured.case(f"m{i}", 64).latency.median, accuracy[labels[i]] * 100) for i in curve if precision in labels[i])
        axis.plot(*zip(*points), linewidth=0.8, alpha=0.6, label=f"distilled student, {precision} (deeper pruning →)")
    axis.set_xscale("log")
    axis.set_xlabel("latency at batch 64, ms (ONNX Runtime, 2 threads, log scale)")
    axis.set_ylabel("test accuracy, % (ONNX Runtime)")
    axis.set_title("Fashion-MNIST: accuracy vs latency (squares fp32, circles int8)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=120)


if __name__ == "__main__":
    main()
