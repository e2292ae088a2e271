"""Real text, no downloads: a causal LM on the Python standard library's own sources (issue 17, item 6a).

Every row is one `edgekd.compress` run sized from `recipes/lm-stdlib.yaml` (same data, same tokenizer, same
teacher checkpoint — the teacher trains once):

  1 teacher                          gpt_s as in the recipe, token cross-entropy
  2 CE from scratch                  a gpt_s of about 1/3 of the teacher's parameters, cross-entropy only
  3/4/5 distilled                    that student from scratch, token-level KD from the teacher with
                                     forward KL / reverse KL / generalized JSD (β 0.5)
  6 pruned + KD                      the teacher pruned (heads, MLP widths) with forward-KL recovery
  7 row 6 + int8 QAT-KD              ort-x86 int8, quantization-aware distillation
  8 row 6 + int4 weight-only         MatMulNBits, block-wise int4 weights, distillation repairs the rounding

Held-out perplexity and token accuracy are ONNX Runtime's on the exported files (test packages held out
whole); tokens/s come from one `benchmark_generation` call over every file, teacher first.

    python -m edgekd.data.stdlib runs/data/stdlib-source --source   # the data (seconds)
    python bench/language.py train   # through `cpujob work`: every row (results kept, resumable)
                                     # or the teacher alone (`train --only 1`), then rows in parallel jobs
                                     # (`train --only 2 --only 6 …`): results.json is merged on every save
    python bench/language.py time    # through `cpujob timing`: greedy generation side by side, a minute
    python bench/language.py write   # the RESULTS.md section from the stored results
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

import edgekd
from common import machine, replace_section, stamp
from edgekd.bench.generation import benchmark_generation
from edgekd.bench.timing import TimingSettings

RECIPE = Path(__file__).parents[1] / "recipes" / "lm-stdlib.yaml"
SECTION = "Language model on the standard library's sources: CE vs KD divergences, prune + KD, int8, int4 (issue 17)"


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir: Path = args.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.recipe = yaml.safe_load(RECIPE.read_text())
        self.recipe.pop("gates", None)
        self.recipe["data"]["root"] = str(args.data)
        if args.limit:
            self.recipe["data"]["limit"] = args.limit
        self.recipe["teacher"]["train"]["epochs"] = args.teacher_epochs
        self.results_file = self.workdir / "results.json"
        self.results: dict[str, Any] = json.loads(self.results_file.read_text()) if self.results_file.is_file() else {}
        self.pruned = {"prune": {"target_macs": args.target_macs, "steps": 1}, "recover": {"epochs": args.student_epochs}}

    def save(self) -> None:
        """Merge into the file: `train --only` jobs for different rows may run side by side."""
        stored = json.loads(self.results_file.read_text()) if self.results_file.is_file() else {}
        self.results = {**stored, **self.results}
        self.results_file.write_text(json.dumps(self.results, indent=2) + "\n")

    def rows(self) -> dict[str, dict]:
        """Row name → what replaces the recipe's student, distill settings and stages."""
        small = {"model": self.args.student}
        export = {"export": {"opset": 17, "exact_match_rows": 8}}
        scratch = {"distill": {"epochs": self.args.scratch_epochs, "lr": self.recipe["teacher"]["train"]["lr"]}}
        return {
            "2 CE from scratch": {"student": small, "distill": {"method": "ce"}, "stages": [scratch, export]},
            "3 KD forward KL": {"student": small, "distill": {"divergence": "forward_kl"}, "stages": [scratch, export]},
            "4 KD reverse KL": {"student": small, "distill": {"divergence": "reverse_kl"}, "stages": [scratch, export]},
            "5 KD JSD β 0.5": {"student": small, "distill": {"divergence": "jsd", "beta": 0.5}, "stages": [scratch, export]},
            "6 pruned + KD": {"stages": [self.pruned, export]},
            "7 pruned + KD + int8 QAT-KD": {"stages": [self.pruned, {"qat": {"profile": "ort-x86", "calibration_batches": 8}, "recover": {"epochs": 1, "lr": 0.0002}}, export]},
            "8 pruned + KD + int4 weight-only": {"stages": [self.pruned, {"qat": {"profile": "int4", "block_size": 32}, "recover": {"epochs": 1, "lr": 0.0002}}, export]},
        }

    def recipe_for(self, folder: str, change: dict) -> dict:
        recipe = copy.deepcopy(self.recipe)
        recipe.update(name="bench-language", workdir=str(self.workdir / folder), stages=change["stages"])
        recipe["distill"].update(change.get("distill", {}))
        if "student" in change:
            recipe["student"] = change["student"]
        teacher = self.results.get("1 teacher")
        if teacher:  # the one trained teacher, and its tokenizer, for every other row
            recipe["teacher"] = {"model": self.recipe["teacher"]["model"], "checkpoint": teacher["checkpoint"]}
            recipe["data"]["options"]["tokenizer"] = teacher["tokenizer"]
        return recipe

    def run(self, name: str, recipe: dict) -> dict:
        started = time.perf_counter()
        report = edgekd.compress(recipe, resume=True, quiet=True).to_json()
        minutes = (time.perf_counter() - started) / 60
        print(f"{name}: {minutes:.1f} min", flush=True)
        return {"report": report, "minutes": round(minutes, 2)}

    def teacher(self) -> None:
        if "1 teacher" in self.results:
            return
        folder = self.workdir / "teacher"
        outcome = self.run("1 teacher", self.recipe_for("teacher", {"stages": [{"export": {"opset": 17, "exact_match_rows": 8}}]}))
        report = outcome["report"]
        self.results["1 teacher"] = {
            "minutes": outcome["minutes"], "checkpoint": str(next(folder.glob("teacher-*.pt"))),
            "tokenizer": str(next(folder.rglob("tokenizer.json"))),
            "onnx": str(folder / "teacher.onnx"), "params": report["teacher"]["params"], "macs": report["teacher"]["macs"],
            **measures(report["teacher"].get("onnx") or report["teacher"]),
        }
        self.save()

    def student(self, name: str, change: dict) -> None:
        if name in self.results:
            return
        folder = name.split()[0]
        if change["stages"][0] is self.pruned:  # rows 6-8 share the pruning step: it runs once, each row resumes a copy
            shared = self.workdir / "pruned"
            if not (shared / "progress.json").is_file():
                shared_run = self.run("pruning step shared by rows 6-8", self.recipe_for("pruned", {"stages": [self.pruned]}))
                self.results["shared pruning step"] = {"minutes": shared_run["minutes"]}
                self.save()
            if not (self.workdir / f"row{folder}").exists():
                shutil.copytree(shared, self.workdir / f"row{folder}", ignore=shutil.ignore_patterns(".lock"))
        outcome = self.run(name, self.recipe_for(f"row{folder}", change))
        report = outcome["report"]
        files = report["student"]["onnx"]
        precision = "int4" if "int4" in files else "int8" if "int8" in files else "fp32"
        path = Path(files[precision]["path"])
        self.results[name] = {
            "minutes": outcome["minutes"], "precision": precision, "params": report["student"]["params"], "macs": report["student"]["macs"],
            "onnx": str(path if path.is_absolute() else self.workdir / f"row{folder}" / path), **measures(files[precision]),
            "fp32": measures(files["fp32"]),
        }
        self.save()


def measures(entry: dict) -> dict:
    return {key: entry.get(key) for key in ("accuracy", "perplexity", "exact_match")}


def train(bench: Bench) -> None:
    bench.teacher()
    for name, change in bench.rows().items():
        if bench.args.only and not name.startswith(tuple(bench.args.only)):
            continue
        bench.student(name, change)


def time_models(bench: Bench) -> None:
    args, results = bench.args, bench.results
    files = {name: entry["onnx"] for name, entry in results.items() if isinstance(entry, dict) and "onnx" in entry}
    files = {"1 teacher": files.pop("1 teacher"), **files}
    started = time.perf_counter()
    measured = benchmark_generation(
        files, batch_sizes=(1, 8), prompt_length=32, new_tokens=16, threads=2, memory=False,
        settings=TimingSettings(warmup_s=0.2, min_duration_s=args.seconds, target_rounds=args.rounds, min_rounds=min(5, args.rounds)),
    ).to_json()
    results["generation"] = {"bench": measured, "date": stamp(), "load": os.getloadavg(), "minutes": round((time.perf_counter() - started) / 60, 1)}
    bench.save()
    print(json.dumps(measured, indent=1)[:3000])


def generation_table(results: dict) -> dict[str, dict[int, dict]]:
    """Row → batch → tokens/s and speedup over the teacher, from the stored generation run."""
    if "generation" not in results:
        return {}
    measured = results["generation"]["bench"]
    speedups = {(s["model"], s["batch"]): s for s in measured["speedups"]}
    table: dict[str, dict[int, dict]] = {}
    for case in measured["cases"]:
        ratio = speedups.get((case["model"], case["batch"]))
        table.setdefault(case["model"], {})[case["batch"]] = {
            "tokens_per_s": case["tokens_per_s"], "first_token_ms": case["first_token_ms"]["median"],
            "speedup": ratio["median_ratio"] if ratio else 1.0, "ci": (ratio["ci_low"], ratio["ci_high"]) if ratio else (1.0, 1.0),
        }
    return table


def write(bench: Bench) -> None:
    args, results = bench.args, bench.results
    teacher = results["1 teacher"]
    rows = dict(sorted((name, entry) for name, entry in results.items() if name[0].isdigit()))
    speed = generation_table(results)
    batches = sorted({b for per in speed.values() for b in per})
    lines = []
    for name, entry in rows.items():
        cells = [name, entry.get("precision", "fp32"), f"{entry['params'] / 1e6:.2f} M ({entry['params'] / teacher['params']:.0%})",
                 f"{entry['accuracy']:.2%}", f"{entry['perplexity']:.1f}", f"{entry['minutes']:.1f}"]
        for batch in batches:
            timed = speed.get(name, {}).get(batch)
            cells.append(f"{timed['tokens_per_s']:,.0f} ({timed['speedup']:.2f}×, {timed['ci'][0]:.2f}–{timed['ci'][1]:.2f})" if timed else "—")
        lines.append("| " + " | ".join(cells) + " |")

    goals = []
    scratch = rows.get("2 CE from scratch")
    if scratch:
        gap = scratch["perplexity"] - teacher["perplexity"]
        for name in ("3 KD forward KL", "4 KD reverse KL", "5 KD JSD β 0.5"):
            if name in rows:
                closed = (scratch["perplexity"] - rows[name]["perplexity"]) / gap if gap > 0 else float("nan")
                goals.append((f"{name[2:]} closes ≥ half the perplexity gap CE-from-scratch → teacher", closed >= 0.5,
                              f"{closed:.0%} of {gap:.1f} ({scratch['perplexity']:.1f} → {rows[name]['perplexity']:.1f}; teacher {teacher['perplexity']:.1f})"))
    parent = rows.get("6 pruned + KD")
    for name, limit in (("7 pruned + KD + int8 QAT-KD", 0.03), ("8 pruned + KD + int4 weight-only", None)):
        if parent and name in rows:
            change = rows[name]["perplexity"] / parent["perplexity"] - 1
            label = f"{rows[name]['precision']} within 3% of its fp32 parent's perplexity (row 6)" if limit else "int4 (no goal): perplexity vs row 6"
            own = rows[name]["perplexity"] / rows[name]["fp32"]["perplexity"] - 1  # the same weights' float export
            goals.append((label, change <= limit if limit else None,
                          f"{rows[name]['perplexity']:.2f} vs {parent['perplexity']:.2f} ({change:+.1%}); vs its own float export {rows[name]['fp32']['perplexity']:.2f} ({own:+.2%})"))
    int8 = speed.get("7 pruned + KD + int8 QAT-KD", {}).get(1)
    if int8:
        goals.append(("pruned int8 student ≥ 2× the teacher's tokens/s at batch 1", int8["speedup"] >= 2,
                      f"{int8['speedup']:.2f}× ({int8['tokens_per_s']:,.0f} vs {speed['1 teacher'][1]['tokens_per_s']:,.0f} tokens/s)"))
    goal_rows = "\n".join(f"| {goal} | {'—' if ok is None else 'met' if ok else '**not met**'} | {value} |" for goal, ok, value in goals)

    timing = "Generation was not timed yet (`python bench/language.py time`)."
    if speed:
        info = results["generation"]
        timing = (f"Generation ({info['date']}, `cpujob timing`: no other job ran; load average at the end {', '.join(f'{v:.2f}' for v in info['load'])}): "
                  f"one `benchmark_generation` call over every row's ONNX file, teacher first; greedy decoding in ONNX Runtime, 32-token "
                  f"prompts, 16 new tokens, no KV cache (each step re-reads the prefix), 2 threads; tokens/s = new tokens of the batch per "
                  f"second of the whole generation (median); speedup over the teacher = median ratio of interleaved blocks (confidence interval).")
    recipe = bench.recipe
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "torch-pruning", "onnxruntime", "tokenizers"))
    header = " | ".join(["row", "ONNX file", "parameters (of teacher)", "token acc (ORT)", "perplexity (ORT)", "train min"] + [f"tokens/s b{b} (× teacher)" for b in batches])
    body = f"""Machine: {machine()}, {os.cpu_count()} cores, shared with other helpers' work (training ran through
`cpujob work`, one thread, beside other jobs). Date: {stamp()}. Versions: {versions}.
Commands: `python -m edgekd.data.stdlib runs/data/stdlib-source --source`, `python bench/language.py train{f' --limit {args.limit}' if args.limit else ''} --teacher-epochs {args.teacher_epochs} --scratch-epochs {args.scratch_epochs} --student-epochs {args.student_epochs}`
(~{sum(e['minutes'] for e in rows.values()) + results.get('shared pruning step', {}).get('minutes', 0):.0f} minutes of training in all, one thread; rows 6–8 share their pruning step ({results.get('shared pruning step', {}).get('minutes', 0):.1f} min, not in their rows' minutes: each row resumes a copy of it), `python bench/language.py time`, `python bench/language.py write --notes bench/language_notes.md`.

Data: `recipes/lm-stdlib.yaml`'s — chunks of 12 source lines of eight standard-library packages for training, json and
unittest held out whole for test; BPE vocabulary {recipe['data']['options']['tokenizer']['vocab_size']}, {recipe['data']['options']['max_length']} tokens; the teacher's tokenizer for every row.
Teacher `{recipe['teacher']['model']}`, {args.teacher_epochs} epochs of token cross-entropy (trained once, given to rows 2–8 as its checkpoint).
Rows 2–5: `{args.student}` from scratch, {args.scratch_epochs} epochs (`distill` stage, the teacher's lr {recipe['teacher']['train']['lr']}): row 2 `method: ce` (cross-entropy only),
rows 3–5 `method: kd`, α {recipe['distill']['alpha']}, T {recipe['distill']['temperature']}, with the divergence named. Row 6: the teacher pruned to
{args.target_macs:.0%} of its MACs in one step (attention heads and MLP widths; embeddings and the vocabulary projection stay), {args.student_epochs} epochs
of forward-KL recovery. Rows 7/8: row 6 plus int8 QAT (ort-x86) / int4 weight-only (block 32), one epoch of distillation at lr 2e-4.
Perplexity and token accuracy are ONNX Runtime's on the exported file, on the held-out packages (real tokens only).

| {header} |
|{'---|' * (6 + len(batches))}
""" + "\n".join(lines) + f"""

{timing}

| goal (issue 17, 6a) | status | measured |
|---|---|---|
{goal_rows}
"""
    if args.notes:
        body += "\n" + args.notes.read_text()
    replace_section(SECTION, body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["train", "time", "write"])
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-language"))
    parser.add_argument("--data", type=Path, default=Path("runs/data/stdlib-source"), help="python -m edgekd.data.stdlib DIR --source")
    parser.add_argument("--limit", type=int, default=0, help="training rows used (0: all), for the CPU budget")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--student", default="gpt_s(dim=64, depth=4, heads=2, mlp_ratio=4)", help="the student architecture of rows 2-5")
    parser.add_argument("--scratch-epochs", type=int, default=6, help="epochs of rows 2-5 (from scratch): the teacher's by default")
    parser.add_argument("--student-epochs", type=int, default=2, help="epochs of row 6's recovery after pruning")
    parser.add_argument("--target-macs", type=float, default=0.5, help="row 6's pruning target, a fraction of the teacher's MACs")
    parser.add_argument("--only", action="append", default=[], help="train only the rows whose names start with this (and the teacher)")
    parser.add_argument("--notes", type=Path, help="write: a markdown file appended to the section (the reading of the figures, by hand)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    bench = Bench(args)
    {"train": train, "time": time_models, "write": write}[args.part](bench)


if __name__ == "__main__":
    main()
