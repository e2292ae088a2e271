"""Step-by-step against label-only fine-tuning through `edgekd compress`, at each data fraction (issue 18).

A companion to `bench/step_by_step.py`, whose seq2seq students stayed near the constant-answer floor: the
same comparison made with what `recipes/step-by-step.yaml` trains — a 2-layer, 64-wide `gpt_s` decoder on the
SYNTHETIC word problems with numbers 2–20 (`python -m edgekd.data.wordproblems runs/data/wordproblems
--max-value 20`), the data's own (gold) rationales, the recipe's `distill` stage alone, with the optimizer steps of the whole set at
every fraction (no teacher term, no pruning: the students learn from the data only). Two students per (fraction, seed), identical but for α:
step-by-step (α 0.5, rationale separate) and label-only (α 1, which equals `method: ce` on the label task).
Exact match of the label on the 300 test problems, greedy, the `predict:` task alone.

    PYTHONPATH=$PWD /work/bin/cpujob work python bench/step_by_step_recipe.py run --seed K   # K = 0…3, one job per
    python bench/step_by_step_recipe.py write --notes NOTES.md                               # seed, side by side
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import yaml

import edgekd
from common import machine, replace_section, stamp

RECIPE = Path(__file__).parent.parent / "recipes" / "step-by-step.yaml"
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
METHODS = {"label-only (α 1)": 1.0, "step-by-step, separate (α 0.5)": 0.5}
TITLE = "Step-by-step vs label-only through edgekd compress, gold rationales (issue 18)"


def recipe_for(workdir: Path, fraction: float, alpha: float, seed: int, train_rows: int) -> dict:
    recipe = yaml.safe_load(RECIPE.read_text())
    step = copy.deepcopy(recipe["distill"]["method"][0])
    recipe |= {"name": "sbs-fraction", "seed": seed, "workdir": str(workdir),
               "teacher": {"model": recipe["student"], "train": {"epochs": 1, "lr": 0.002, "optimizer": {"name": "adamw"}}}}
    recipe["data"]["limit"] = max(10, round(train_rows * fraction))
    recipe["distill"]["method"] = [step | {"alpha": alpha}]
    # Every fraction gets the optimizer steps of the whole set (the epochs scaled up), as in bench/step_by_step.py.
    recipe["stages"] = [{"distill": stage["distill"] | {"epochs": round(stage["distill"]["epochs"] / fraction)}}
                        for stage in recipe["stages"] if "distill" in stage]
    return recipe


def run(args: argparse.Namespace) -> None:
    train_rows = sum(1 for _ in open(Path(yaml.safe_load(RECIPE.read_text())["data"]["root"]) / "train.jsonl"))
    for fraction in FRACTIONS:
        for method, alpha in METHODS.items():
            key = f"{method} | {fraction} | seed {args.seed}"
            if key in load(args.results):
                continue
            started = time.perf_counter()
            report = edgekd.compress(recipe_for(args.workdir / f"s{args.seed}-{fraction}-{alpha}", fraction, alpha, args.seed, train_rows), quiet=True)
            step = report.steps[-1]
            results = {**load(args.results), key: {"exact_match": step.label_exact_match, "rows": report.dataset.sizes["train"],
                                                   "minutes": round((time.perf_counter() - started) / 60, 2)}}  # fmt: skip
            args.results.write_text(json.dumps(results, indent=1) + "\n")
            print(key, results[key], flush=True)


def floor() -> float:
    """Exact match of always answering the commonest training answer, on the test split."""
    root = Path(yaml.safe_load(RECIPE.read_text())["data"]["root"])
    labels = {split: [json.loads(line)["label"] for line in open(root / f"{split}.jsonl")] for split in ("train", "test")}
    commonest = max(set(labels["train"]), key=labels["train"].count)
    return labels["test"].count(commonest) / len(labels["test"])


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write(args: argparse.Namespace) -> None:
    results = load(args.results)
    rows = ["| method | " + " | ".join(f"{f:.1%}" for f in FRACTIONS) + " |", "|---|" + "---|" * len(FRACTIONS)]
    for method in METHODS:
        cells = []
        for fraction in FRACTIONS:
            values = [100 * v["exact_match"] for k, v in results.items() if k.startswith(f"{method} | {fraction} |")]
            cells.append(f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f} (n={len(values)})" if values else "—")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    sizes = sorted({v["rows"] for v in results.values()})
    minutes = sum(v["minutes"] for v in results.values())
    body = (
        f"Machine: {machine()}. Date: {stamp()}. `cpujob work` jobs (one per seed, 1 thread each), two side by side; "
        f"{minutes:.1f} one-thread minutes in all.\n\nCommand: `python bench/step_by_step_recipe.py run --seed K` (K = 0…3), then `write`.\n\n"
        + (__doc__ or "").split("\n\n")[1].strip() + f"\n\nTraining rows at the four fractions: {', '.join(map(str, sizes))}. "
        "Test exact match of the label (%, mean ± std over seeds):\n\n" + "\n".join(rows) + "\n\n"
        f"Floor: always answering the commonest training answer scores {100 * floor():.1f}% on this test split.\n"
    )
    if args.notes and args.notes.is_file():
        body += "\n" + args.notes.read_text()
    replace_section(TITLE, body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["run", "write"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-sbs-recipe"))
    parser.add_argument("--results", type=Path, default=Path("runs/bench-sbs-recipe/results.json"))
    parser.add_argument("--notes", type=Path, help="write: hand-written notes appended to the section")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    {"run": run, "write": write}[args.part](args)


if __name__ == "__main__":
    main()
