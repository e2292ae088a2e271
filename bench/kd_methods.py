"""The distillation family on Fashion-MNIST (issue 7's benchmark).

The same small student, the same epochs and three seeds, trained with cross-entropy
only and with each method; multi-teacher with two teachers of different
architectures, TA with an assistant made by pruning the teacher to half its MACs,
cross-modal with the teacher reading 28×28 and the student a 14×14 view.
Reports test accuracy (mean ± std) and seconds per epoch.

    python bench/kd_methods.py                      # ~30 min on 2 quiet cores
    python bench/kd_methods.py --limit 6000 --seeds 1   # a quick look
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import edgekd
from common import machine, over_seeds, replace_section, stamp

TEACHER = "resnet_s(depth=8, width=16)"
STUDENT = "cnn(width=8)"
PAIRS = [["features.1", "layers.0"], ["features.4", "layers.1"]]
METHODS: dict[str, list | str] = {
    "CE only": "ce",
    "kd": "kd",
    "feature + kd": [{"method": "kd"}, {"method": "feature", "pairs": PAIRS}],
    "hint (FitNets, stage 1) + kd": [{"method": "kd"}, {"method": "hint", "student_layer": "features.4", "teacher_layer": "layers.1", "stage1_epochs": 1}],
    "attention + kd": [{"method": "kd"}, {"method": "attention", "weight": 1000, "pairs": PAIRS}],
    "dml (1 peer, teacher-free)": [{"method": "dml", "peers": 1, "select": "best"}],
    "self (BYOT) + kd": [{"method": "kd"}, {"method": "self", "heads": ["features.1"]}],
    "ta (assistant = teacher pruned to 50% MACs)": [{"method": "ta", "assistant_macs": 0.5, "assistant_epochs": 2}],
    "multi-teacher (resnet_s + cnn(width=32), confidence)": [
        {"method": "multi-teacher", "teachers": [{"model": "cnn(width=32)", "train": {"epochs": 4, "lr": 0.05}}], "weighting": "confidence"}
    ],
    "cross-modal (student sees 14×14)": "cross-modal",
}


def recipe(args: argparse.Namespace, label: str, method: list | str, seed: int, teacher: dict) -> dict:
    cross_modal = method == "cross-modal"
    return {
        "name": "kd-methods",
        "seed": seed,
        "workdir": str(args.workdir / f"{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}-s{seed}"),
        "data": {"dataset": "fashion-mnist", "batch_size": 128, "limit": args.limit, "views": {"low": {"resize": 14}}},
        "teacher": teacher,
        "student": {"model": STUDENT, "input": "low" if cross_modal else "input"},
        "distill": {"method": method, "alpha": 0.0 if method == "ce" else 0.9, "temperature": 4.0, "epochs": args.epochs, "lr": 0.05},
        "stages": [{"distill": {}}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=20000, help="training samples (of 54,000)")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-kd-methods"))
    args = parser.parse_args()

    train = {"epochs": args.teacher_epochs, "lr": 0.1}
    base = edgekd.compress(
        {**recipe(args, "teacher", "kd", 0, {"model": TEACHER, "train": train}), "stages": [], "workdir": str(args.workdir / "teacher")},
        quiet=True,
    ).to_json()
    checkpoint = next((args.workdir / "teacher").glob("teacher-*.pt"))
    teacher = {"model": TEACHER, "checkpoint": str(checkpoint)}
    rows = []
    for label, method in METHODS.items():
        rows.append(over_seeds(label, [recipe(args, label, method, seed, teacher) for seed in range(args.seeds)], args.epochs)[0])

    body = f"""Machine: {machine()}. Date: {stamp()}. Command: `python bench/kd_methods.py --seeds {args.seeds} --epochs {args.epochs} --limit {args.limit}`.

Teacher `{TEACHER}`: {base['teacher']['accuracy']:.2%} test accuracy ({args.teacher_epochs} epochs on {args.limit:,} training images).
Student `{STUDENT}`, {args.epochs} epochs, SGD lr 0.05 cosine, batch 128, α=0.9, T=4 where soft targets are used. Epoch time includes the teacher's live forward passes where a method reads teacher features, and any assistant/peer training.

| method | test accuracy % (mean ± std, {args.seeds} seeds) | s / epoch |
|---|---|---|
""" + "\n".join(rows)
    replace_section("The distillation family on Fashion-MNIST (issue 7)", body)
    print(body)


if __name__ == "__main__":
    main()
