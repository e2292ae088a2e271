"""Iterative pruning with recovery on Fashion-MNIST (issue 3's benchmark).

A resnet_s(depth=8, width=16) teacher (trained once, shared through its checkpoint)
is pruned to 1/3 of its MACs three ways, each with 8 recovery epochs in total:

  1. 4 steps, 2 recovery epochs of distillation after each (α=0.9, T=4);
  2. 4 steps, 2 recovery epochs of cross-entropy only (α=0) after each;
  3. one-shot: 1 step, then 8 epochs of distillation.

Every way uses group-L2 importance and per-layer pruning without round_to (on a
width-16 network, rounding to 4 or 8 channels strips the narrow first stage much
harder than the wide last one), the same seed and SGD (lr 0.01, cosine, batch 128).
Writes its section of bench/RESULTS.md.

    python bench/prune_recovery.py      # about 25–35 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import time
from importlib.metadata import version
from pathlib import Path

import edgekd
from common import machine, replace_section, stamp

TEACHER = "resnet_s(depth=8, width=16)"
PRUNE = {"target_macs": 0.33, "importance": "group_l2"}


def recipe(workdir: Path, teacher: dict, stages: list, limit: int | None) -> dict:
    return {
        "name": "prune-recovery",
        "seed": 0,
        "workdir": str(workdir),
        "data": {"dataset": "fashion-mnist", "batch_size": 128, "limit": limit},
        "teacher": teacher,
        "student": "teacher",
        "distill": {"lr": 0.01, "temperature": 4.0, "alpha": 0.9},
        "stages": stages,
    }


def ways(epochs_per_step: int, steps: int) -> dict[str, tuple[str, list]]:
    """key → (label, stages): iterative with distillation, iterative with CE only, one-shot."""
    iterative = {**PRUNE, "steps": steps}
    return {
        "kd": (f"{steps} steps, distillation recovery (α=0.9)", [{"prune": iterative, "recover": {"epochs": epochs_per_step}}]),
        "ce": (f"{steps} steps, CE-only recovery (α=0)", [{"prune": iterative, "recover": {"epochs": epochs_per_step, "alpha": 0.0}}]),
        "one-shot": (
            f"one-shot, then {steps * epochs_per_step} epochs distillation",
            [{"prune": {**PRUNE, "steps": 1}, "recover": {"epochs": steps * epochs_per_step}}],
        ),
    }


def verdict(teacher: float, accuracy: dict[str, float]) -> str:
    behind, ahead = (teacher - accuracy["kd"]) * 100, (accuracy["kd"] - accuracy["ce"]) * 100
    met = "met" if behind <= 1.0 and ahead > 0 else "not met"
    return (
        f"Goal (distillation recovery within 1.0 point of the teacher and ahead of CE-only): **{met}** — "
        f"{behind:.2f} points behind the teacher, {ahead:+.2f} points vs CE-only."
    )


def step_table(label: str, report: dict) -> str:
    rows = [
        f"| {s['step']} | {s['target']:,} | {s['macs']:,} | {s['params']:,} | {s['accuracy_before_recovery']:.2%} | {s['accuracy']:.2%} |"
        for s in report["steps"]
    ]
    header = "| step | aim (MACs) | MACs | params | accuracy before recovery | after recovery |\n|---|---|---|---|---|---|\n"
    return f"Steps of “{label}”:\n\n{header}" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--epochs-per-step", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-prune-recovery"))
    parser.add_argument("--limit", type=int, help="keep only this many training images (a smoke run)")
    args = parser.parse_args()

    started = time.perf_counter()
    teacher_train = {"model": TEACHER, "train": {"epochs": args.teacher_epochs, "lr": 0.1}}
    teacher_run = edgekd.compress(recipe(args.workdir / "teacher", teacher_train, [], args.limit), quiet=True).to_json()
    teacher_seconds = time.perf_counter() - started
    checkpoint = next((args.workdir / "teacher").glob("teacher-*.pt"))
    teacher = {"model": TEACHER, "checkpoint": str(checkpoint)}
    t = teacher_run["teacher"]
    rows = [f"| teacher `{TEACHER}` | {t['accuracy']:.2%} | – | {t['macs']:,} (100%) | {t['params']:,} | {teacher_seconds / 60:.1f} (training) |"]
    details, accuracy = [], {}
    for index, (key, (label, stages)) in enumerate(ways(args.epochs_per_step, args.steps).items()):
        began = time.perf_counter()
        report = edgekd.compress(recipe(args.workdir / f"way{index}", teacher, stages, args.limit), quiet=True).to_json()
        minutes = (time.perf_counter() - began) / 60
        s = report["student"]
        accuracy[key] = s["accuracy"]
        gap = (s["accuracy"] - t["accuracy"]) * 100
        rows.append(f"| {label} | {s['accuracy']:.2%} | {gap:+.2f} | {s['macs']:,} ({s['macs'] / t['macs']:.0%}) | {s['params']:,} | {minutes:.1f} |")
        details.append(step_table(label, report))
        print(rows[-1], flush=True)

    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "torch-pruning", "numpy"))
    body = f"""Machine: {machine()}, {os.cpu_count()} cores. Date: {stamp()}. Versions: {versions}.
Command: `python bench/prune_recovery.py` (teacher {args.teacher_epochs} epochs at lr 0.1; {args.steps} steps × {args.epochs_per_step} recovery epochs).

Fashion-MNIST (54k train / 6k val / 10k test), teacher pruned to 1/3 of its MACs
(target_macs {PRUNE["target_macs"]}, importance {PRUNE["importance"]}, per-layer, no round_to),
recovery SGD lr 0.01 cosine, batch 128, α=0.9 T=4 where distilling, seed 0.
Wall time includes evaluation and measurement (and other jobs sharing the 2 cores).

| model | test accuracy | vs teacher (points) | MACs | params | wall time (min) |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"\n\n{verdict(t['accuracy'], accuracy)}\n\n" + "\n\n".join(details) + "\n"
    replace_section("Pruning with recovery (issue 3)", body)
    print(body)


if __name__ == "__main__":
    main()
