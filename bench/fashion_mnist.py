"""The headline benchmark (issue 9): does edgekd deliver a small, fast, accurate model on Fashion-MNIST,
compared with what a user would otherwise do?

Rows, every one an ONNX file measured by ONNX Runtime on the 10k test images and timed in deployment
mode (each file alone in a fresh process per round, 6 rounds rotating the order, ONNX Runtime's default
session options but 2 intra-op threads, spinning on and off, batch 1 and 64):
  1. the teacher, fp32 — `recipes/fashion-mnist.yaml`'s teacher, trained here (or reused from --workdir);
  2. the teacher + ONNX Runtime's own PTQ (quantize_static, QDQ, u8 activations, s8 per-channel weights);
  3. the student pruned as the recipe prunes it, recovered with cross-entropy only, fp32;
  4. the same, recovered with distillation from the teacher, fp32;
  5. the same + quantization-aware distillation, int8 — the whole recipe, as `edgekd compress
     recipes/fashion-mnist.yaml` runs it (less its bench stage: this script times every row itself),
     with the image stem its export chose (`stem: auto`); 5′ the same weights with the other stem;
  5q. the edgekd student's float weights quantized by ONNX Runtime's quantize_static (same weights,
     ORT's placement): the export judged on its own;
and, for comparison, the by-hand pipeline (one-shot pruning to 1/3 of the MACs, 4 epochs of
cross-entropy fine-tuning, then quantize_static) and a trade-off curve: the distilled student pruned
further (extra prune + distillation stages appended to row 4's run), each point in fp32 and int8.

Runs reuse each other's finished steps (`--resume` extends a run with appended stages), and the
script itself resumes: run it again after an interruption and finished runs are not repeated.
Training and accuracy (`--phase prepare`) and timing (`--phase time`, about 6 minutes) can run apart,
so that the timing has the machine to itself.

    python bench/fashion_mnist.py                          # about 50 minutes on 2 CPU cores
    python bench/fashion_mnist.py --phase prepare          # everything but the timing
    python bench/fashion_mnist.py --phase time             # the timing and RESULTS.md, from the prepared files
    python bench/fashion_mnist.py --curve 0.2              # fewer curve points
"""

from __future__ import annotations

import argparse
import copy
import json
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
from edgekd.bench.deployment import ratio_between
from edgekd.data import load_data
from edgekd.export.runtime import layout_changes, onnx_accuracy, ort_quantize_static
from edgekd.export.stage import ExportConfig
from edgekd.recipe import load_recipe
from edgekd.run import Run

RECIPE = Path(__file__).parents[1] / "recipes" / "fashion-mnist.yaml"
PLOT = Path(__file__).with_name("fashion_mnist.png")
THREADS = 2
BATCHES = (1, 64)
ROUNDS = 6
SPINNING = ("on", "off")
CALIBRATION_BATCHES = 32
BY_HAND = {"target_macs": 0.33, "epochs": 4}
ROW5, OTHER_STEM, ROW5Q, BY_HAND_ROW = "5", "5′", "5q", "by hand"


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
        report = edgekd.compress(recipe, resume=True, quiet=True).to_json()
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

    def stem_files(self, name: str) -> dict[str, Path]:
        """Run `name`'s int8 student exported with each stem (its float weights and scales are the same)."""
        workdir = self.workdir / name
        files = {kind: workdir / f"student.int8.stem-{kind}.onnx" for kind in ("int8", "float")}
        for kind, path in files.items():
            if not path.is_file():
                recipe = load_recipe(json.loads((workdir / "recipe.json").read_text()))
                Run(recipe, quiet=True).export_latest(ExportConfig(stem=kind))
                shutil.copyfile(workdir / "student.int8.onnx", path)
        return files


def deeper(prune: dict, target: float) -> dict:
    """A further prune stage to `target` of the teacher's MACs, recovered like the recipe's."""
    return {"prune": {**prune["prune"], "target_macs": target, "steps": 1}, "recover": prune["recover"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="a recipe whose stages are prune, qat, export, bench")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-fashion-mnist"))
    parser.add_argument("--curve", default="0.2,0.12", help="further MACs fractions for the trade-off curve ('' for none)")
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per process and batch size")
    parser.add_argument("--phase", choices=("all", "prepare", "time"), default="all")
    args = parser.parse_args()
    prepared = args.workdir / "prepared.json"
    if args.phase in ("all", "prepare"):
        prepare(args, prepared)
    if args.phase in ("all", "time"):
        facts = json.loads(prepared.read_text())
        measuring = time.perf_counter()
        measured = measure({label: Path(row["file"]) for label, row in facts["rows"].items()}, args.seconds)
        (args.workdir / "deployment.json").write_text(json.dumps(measured.to_json()))
        write_results(args, facts, measured, time.perf_counter() - measuring)
        plot(facts, measured)


def prepare(args: argparse.Namespace, prepared: Path) -> None:
    """Every run, every file, every accuracy: all but the timing (`prepared.json`)."""
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

    shipped = runs["kd-int8"]["student"]["onnx"]["int8"]
    choice = shipped["stem"]
    other = "float" if choice == "int8" else "int8"
    stems = bench.stem_files("kd-int8")  # after this, kd-int8's student.onnx holds the float weights of both
    student = runs["kd-int8"]["student"]
    # row key → (label, short name for the plot, ONNX file, the run's entry with its MACs and parameters)
    rows = {
        "1": ("1 teacher fp32", "1", teacher_onnx, teacher_run["teacher"]),
        "2": ("2 teacher + ORT PTQ int8", "2", bench.quantize_static(teacher_onnx, args.workdir / "teacher" / "teacher.ort-ptq.onnx"), teacher_run["teacher"]),
        "3": ("3 pruned, CE recovery, fp32", "3", bench.exported("ce"), runs["ce"]["student"]),
        "4": ("4 pruned, KD recovery, fp32", "4", bench.exported("kd"), runs["kd"]["student"]),
        ROW5: (f"5 edgekd recipe: pruned + KD + QAT-KD, int8 ({choice} stem, as its export chose)", "5", stems[choice], student),
        OTHER_STEM: (f"5′ the same weights, {other} stem", "5′", stems[other], student),
        ROW5Q: ("5q edgekd student quantized by quantize_static (same weights, ORT's placement)", "5q",
                bench.quantize_static(args.workdir / "kd-int8" / "student.onnx", args.workdir / "kd-int8" / "student.ort-ptq.onnx"), student),
        BY_HAND_ROW: ("by hand: one-shot prune, CE, ORT PTQ int8", "by hand",
                      bench.quantize_static(bench.exported("by-hand"), args.workdir / "by-hand" / "student.ort-ptq.onnx"), runs["by-hand"]["student"]),
    }
    for target in curve_targets:
        entry = runs[f"kd-{target}"]["student"]
        rows[f"{target:.0%} fp32"] = (f"curve {target:.0%}: KD fp32", f"{target:.0%}", bench.exported(f"kd-{target}"), entry)
        rows[f"{target:.0%} int8"] = (f"curve {target:.0%}: KD + QAT-KD int8", f"{target:.0%}", args.workdir / f"kd-{target}-int8" / "student.int8.onnx", entry)
    facts = {
        "rows": {
            key: {"label": label, "short": short, "file": str(path), "accuracy": bench.accuracy(path), "macs": entry["macs"],
                  "params": entry["params"], "layout_changes": layout_changes(path)}
            for key, (label, short, path, entry) in rows.items()
        },
        "placement": shipped["placement"],
        "run_minutes": {name: seconds / 60 for name, seconds in bench.timings.items()},
        "prepare_minutes": (time.perf_counter() - started) / 60,
        "recipe": {"teacher": bench.recipe["teacher"], "batch_size": bench.recipe["data"]["batch_size"], "distill": bench.recipe["distill"],
                   "prune": bench.prune, "qat": bench.qat},
        "curve": args.curve,
    }
    prepared.write_text(json.dumps(facts, indent=1))


def measure(files: dict[str, Path], seconds: float) -> BenchResult:
    """Every file in deployment mode: alone in a fresh process per round, spinning on and off; peak RSS
    in fresh processes. Files are copied to m0.onnx, m1.onnx … (their names in the result)."""
    staged = files[next(iter(files))].parents[1] / "deployed"
    staged.mkdir(exist_ok=True)
    named = []
    for index, path in enumerate(files.values()):
        named.append(staged / f"m{index}.onnx")
        shutil.copyfile(path, named[-1])
    return benchmark(
        named, rounds=ROUNDS, batch_sizes=BATCHES, threads=THREADS, spinning=SPINNING, warmup_s=0.3,
        min_duration_s=seconds, memory=True, roofline=False,
    )  # fmt: skip


def write_results(args: argparse.Namespace, facts: dict[str, Any], measured: BenchResult, timing_s: float) -> None:
    rows = facts["rows"]
    keys = list(rows)
    name = {key: f"m{index}" for index, key in enumerate(keys)}
    size = {key: Path(row["file"]).stat().st_size for key, row in rows.items()}
    accuracy = {key: row["accuracy"] for key, row in rows.items()}
    table = []
    for key, row in rows.items():
        cells, speedups = [], []
        for batch in BATCHES:
            case = measured.case(name[key], batch, "on")
            cells.append(f"{case.median_ms:.3f} / {case.latency.p90:.3f}" + (" ⚑" if case.finding else ""))
            speedups.append("1×" if key == keys[0] else _speedup(measured.ratio(name[key], batch, "on").inverted()))
        memory = measured.case(name[key], BATCHES[-1]).memory or {}
        table.append(
            f"| {row['label']} | {accuracy[key]:.2%} | {row['macs'] / 1e6:.2f} M | {row['params']:,} | {size[key] / 1024:.1f} KiB "
            f"({size[keys[0]] / size[key]:.1f}× smaller) | {cells[0]} | {cells[1]} | {speedups[0]} | {speedups[1]} | "
            f"{memory.get('peak_rss_mb', float('nan')):.0f} | {row['layout_changes']} |"
        )
    conditions = []
    for key in ("1", ROW5, OTHER_STEM, ROW5Q):
        for condition in SPINNING:
            cells = []
            for batch in BATCHES:
                case = measured.case(name[key], batch, condition)
                cells.append(f"{case.median_ms:.3f} ({', '.join(f'{m:.2f}' for m in case.process_medians_ms)})")
                if key != "1":
                    cells.append(_speedup(measured.ratio(name[key], batch, condition).inverted()))
                    if key != ROW5Q:
                        cells.append(_ratio(ratio_between(case, measured.case(name[ROW5Q], batch, condition))))
                    else:
                        cells.append("1")
                else:
                    cells += ["1×", "–"]
            conditions.append(f"| {rows[key]['label'].split(':')[0].split('(')[0].strip()} | {condition} | " + " | ".join(cells) + " |")
    goals = goal_rows(rows, accuracy, size, measured, name)
    labels = {f"m{index}": rows[key]["label"] for index, key in enumerate(keys)}
    findings = "\n".join(f"- {labels[line.split(' at batch')[0]]}: {line}" for line in measured.findings) or "- none"
    recipe = facts["recipe"]
    placement = facts["placement"]
    versions = ", ".join(f"{package} {version(package)}" for package in ("torch", "torch-pruning", "onnx", "onnxruntime"))
    minutes = ", ".join(f"{k} {v:.1f}" for k, v in facts["run_minutes"].items())
    load = measured.load_average
    body = f"""Machine: {machine()}, {os.cpu_count()} cores. Date: {stamp()}. Versions: {versions}, Python {sys.version.split()[0]}.
Command: `python bench/fashion_mnist.py --curve {facts["curve"] or "''"}` — prepared (`--phase prepare`, training and accuracy) in
{facts["prepare_minutes"]:.0f} minutes beside other work (runs in minutes: {minutes}; a finished run shows its resume time), then timed
(`--phase time`) alone on the machine (`cpujob timing`) in {timing_s / 60:.1f} minutes; load average {load.get("before_timing")} before the
timing, {load.get("after_timing")} after.

Fashion-MNIST (54k train / 6k val / 10k test, 28×28). Teacher `{recipe["teacher"]["model"]}` trained
{recipe["teacher"]["train"]["epochs"]} epochs (SGD lr {recipe["teacher"]["train"]["lr"]}, cosine, batch {recipe["batch_size"]}).
Rows 3–5 prune as `recipes/fashion-mnist.yaml` does: `{yaml.safe_dump(recipe["prune"]["prune"], default_flow_style=True).strip()}`, each
step recovered {recipe["prune"]["recover"]["epochs"]} epochs (row 3 with α=0, cross-entropy only; rows 4–5 with α={recipe["distill"]["alpha"]},
T={recipe["distill"]["temperature"]}, lr {recipe["distill"]["lr"]}, cached teacher logits); row 5 then runs
`{yaml.safe_dump(recipe["qat"], default_flow_style=True).strip()}` and the recipe's export, which timed both stems
(`stem: auto`, {placement.get("rounds")} rounds in deployment mode beside the teacher, during preparation, so beside other work)
and shipped the {placement["choice"]} stem; 5′ is the same weights with the other stem, 5q the same float weights
quantized by ONNX Runtime's quantize_static. By hand: torch-pruning one-shot to {BY_HAND["target_macs"]:.0%} MACs (edgekd's pruner,
no rounding), {BY_HAND["epochs"]} epochs of cross-entropy, then quantize_static. Every quantize_static row calibrates on
the same {CALIBRATION_BATCHES} training batches.

Accuracy: ONNX Runtime on the exported file, all 10k test images. Latency: **deployment mode** — each file alone in a
fresh process per round, {ROUNDS} rounds rotating the order of all {len(rows)} files (the teacher in the rotation), ONNX
Runtime's default session options but {THREADS} intra-op threads, 0.3 s warm-up and ≥ {args.seconds:g} s timed per process and
batch; ms = median of the per-process medians / pooled p90 (⚑: the processes disagree, see findings); speedup = median over
rounds of teacher / row, with its interval ([min, max] of {ROUNDS} rounds: 96.9%). This table: spinning on (ONNX Runtime's
default); both settings for the rows that the goals concern are below. Layout: Transposes and NCHWc reorders in the graph
ONNX Runtime runs. Peak RSS of a fresh process running the file at batch 64.

| row | test acc (ORT) | MACs | params | ONNX file | ms b1 | ms b64 | speedup b1 | speedup b64 | peak RSS MB | layout |
|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(table) + f"""

Spinning on and off, per-process medians in brackets; vs 5q = median over rounds of row / 5q (< 1: faster than
quantize_static on the same weights).

| row | spinning | ms b1 (processes) | speedup b1 | vs 5q b1 | ms b64 (processes) | speedup b64 | vs 5q b64 |
|---|---|---|---|---|---|---|---|
""" + "\n".join(conditions) + f"""

Findings (multi-modality across processes; m-numbers are the files in table order):
{findings}

| goal | status | measured |
|---|---|---|
""" + "\n".join(goals) + f"""

![accuracy vs latency]({PLOT.name})
"""
    replace_section("Headline: Fashion-MNIST, teacher vs what edgekd delivers (issue 9)", body)
    print(body)


def goal_rows(rows: dict[str, Any], accuracy: dict[str, float], size: dict[str, int], measured: BenchResult, name: dict[str, str]) -> list[str]:
    gap = (accuracy["1"] - accuracy[ROW5]) * 100
    hand_gap = (accuracy["1"] - accuracy[BY_HAND_ROW]) * 100
    speed = {c: measured.ratio(name[ROW5], 64, c).inverted() for c in SPINNING}
    hand = measured.ratio(name[BY_HAND_ROW], 64, "on").inverted()
    versus = {
        (c, b): ratio_between(measured.case(name[ROW5], b, c), measured.case(name[ROW5Q], b, c)) for c in SPINNING for b in BATCHES
    }
    modes = [measured.case(name[ROW5], b, c).finding for c in SPINNING for b in BATCHES]
    goals = [
        ("row 5 within 0.5 points of the teacher", gap <= 0.5, f"{-gap:+.2f} points"),
        ("row 5 ≥ 6× faster than the teacher at batch 64 (spinning on / off)", all(r.median_ratio >= 6 for r in speed.values()),
         " / ".join(_speedup(r) for r in speed.values())),
        ("row 5 ≤ 1.0× quantize_static's latency on the same weights (5q), batch 1 and 64, spinning on and off",
         all(r.median_ratio <= 1 for r in versus.values()),
         "; ".join(f"{c} b{b}: {_ratio(r)}" for (c, b), r in versus.items())),
        ("row 5 not multi-modal across processes", not any(modes), "; ".join(m for m in modes if m) or "one mode in every cell"),
        ("row 5 ≥ 8× smaller file", size["1"] / size[ROW5] >= 8, f"{size['1'] / size[ROW5]:.1f}×"),
        ("row 5 better than by hand on accuracy and speed at once (batch 64, spinning on)",
         gap < hand_gap and speed["on"].median_ratio > hand.median_ratio,
         f"{-gap:+.2f} vs {-hand_gap:+.2f} points, {speed['on'].median_ratio:.2f}× vs {hand.median_ratio:.2f}×"),
        ("row 5 (QAT) at least as accurate as 5q (quantize_static, same weights)", accuracy[ROW5] >= accuracy[ROW5Q],
         f"{accuracy[ROW5]:.2%} vs {accuracy[ROW5Q]:.2%}"),
    ]
    return [f"| {goal} | {'met' if ok else '**not met**'} | {value} |" for goal, ok, value in goals]


def _speedup(ratio: Any) -> str:
    return f"{ratio.median_ratio:.2f}× ({ratio.ci_low:.2f}–{ratio.ci_high:.2f})"


def _ratio(ratio: Any) -> str:
    return f"{ratio.median_ratio:.2f} [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}]"


def plot(facts: dict[str, Any], measured: BenchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    rows = list(facts["rows"].values())
    points = [(measured.case(f"m{i}", 64, "on").median_ms, row["accuracy"] * 100, row) for i, row in enumerate(rows)]
    for latency, accuracy, row in points:
        axis.scatter(latency, accuracy, marker="o" if "int8" in row["label"] or "quantize" in row["label"] else "s", s=40)
        axis.annotate(row["short"], (latency, accuracy), textcoords="offset points", xytext=(5, 4), fontsize=8)
    curve = [p for p in points if p[2]["short"] in ("4", "5") or p[2]["label"].startswith("curve")]
    for precision in ("fp32", "int8"):
        line = sorted((lat, acc) for lat, acc, row in curve if precision in row["label"])
        axis.plot(*zip(*line), linewidth=0.8, alpha=0.6, label=f"distilled student, {precision} (deeper pruning →)")
    axis.set_xscale("log")
    axis.set_xlabel("latency at batch 64, ms (deployment mode, ONNX Runtime, 2 threads, log scale)")
    axis.set_ylabel("test accuracy, % (ONNX Runtime)")
    axis.set_title("Fashion-MNIST: accuracy vs latency (squares fp32, circles int8)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=120)


if __name__ == "__main__":
    main()
