"""Distillation vs cross-entropy on Fashion-MNIST (issue 2's benchmark).

A student with about 4× fewer MACs than the teacher, the same epochs and seeds,
trained with CE only (α=0) and with distillation (α=0.9, T=4). Reports test
accuracy mean ± std over three seeds and the epoch time of each.

    python bench/kd_vs_ce.py            # about 20–30 minutes on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import edgekd
from common import machine, over_seeds, replace_section, stamp

TEACHER = "resnet_s(depth=8, width=16)"
STUDENT = "cnn(width=12)"


def recipe(workdir: Path, seed: int, alpha: float, epochs: int, teacher: dict, stages: list | None = None, limit: int | None = None) -> dict:
    return {
        "name": "kd-vs-ce",
        "seed": seed,
        "workdir": str(workdir),
        "data": {"dataset": "fashion-mnist", "batch_size": 128, "limit": limit},
        "teacher": teacher,
        "student": STUDENT,
        "distill": {"alpha": alpha, "temperature": 4.0, "epochs": epochs, "lr": 0.05},
        "stages": [{"distill": {}}] if stages is None else stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--limit", type=int, help="train the students on this many training images (the teacher on all)")
    parser.add_argument("--teacher-checkpoint", type=Path, help="a trained teacher state_dict to reuse")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-kd-vs-ce"))
    args = parser.parse_args()

    trained = {"model": TEACHER, "train": {"epochs": args.teacher_epochs, "lr": 0.1}}
    if args.teacher_checkpoint:
        trained = {"model": TEACHER, "checkpoint": str(args.teacher_checkpoint)}
    teacher_run = edgekd.compress(recipe(args.workdir / "teacher", 0, 0.0, 0, trained, []), quiet=True).to_json()
    checkpoint = args.teacher_checkpoint or next((args.workdir / "teacher").glob("teacher-*.pt"))
    teacher = {"model": TEACHER, "checkpoint": str(checkpoint)}
    rows = []
    for label, alpha in (("CE only (α=0)", 0.0), ("distillation (α=0.9, T=4)", 0.9)):
        recipes = [recipe(args.workdir / f"a{alpha}-s{seed}", seed, alpha, args.epochs, teacher, limit=args.limit) for seed in range(args.seeds)]
        row, report = over_seeds(label, recipes, args.epochs)
        rows.append(row)

    body = f"""Machine: {machine()}. Date: {stamp()}. Command: `python bench/kd_vs_ce.py --seeds {args.seeds} --epochs {args.epochs} --limit {args.limit}` (teacher: {checkpoint.name}, trained {args.teacher_epochs} epochs on all 54,000 training images).
Students trained on {args.limit or 54000:,} training images; test accuracy on the 10,000 test images.

Teacher `{TEACHER}` ({teacher_run['teacher']['macs']:,} MACs, {args.teacher_epochs} epochs): test accuracy {teacher_run['teacher']['accuracy']:.2%}.
Student `{STUDENT}` ({report['student']['macs']:,} MACs, {teacher_run['teacher']['macs'] / report['student']['macs']:.1f}× fewer), SGD lr 0.05 cosine, batch 128.

| training | test accuracy % (mean ± std, {args.seeds} seeds) | s / epoch |
|---|---|---|
""" + "\n".join(rows)
    replace_section("Distillation vs cross-entropy on Fashion-MNIST (issue 2)", body)
    print(body)


if __name__ == "__main__":
    main()
