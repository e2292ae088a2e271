"""Real text, no downloads: a causal LM on the Python standard library's own sources (issue 17, item 6a).

Every row is one `edgekd.compress` run sized from `recipes/lm-stdlib.yaml` (same data, same tokenizer, same
teacher checkpoint — the teacher trains once):

  1 teacher                          gpt_s as in the recipe, token cross-entropy
  2 CE from scratch                  a gpt_s of about 1/3 of the teacher's parameters, cross-entropy only
  3/4/5 distilled                    that student from scratch, token-level KD from the teacher with
                                     forward KL / reverse KL / generalized JSD (β 0.5)
  6 pruned + KD                      the teacher pruned (heads, MLP widths and the hidden size, embeddings
                                     included) to about 1/3 of its parameters, forward-KL recovery
  7 row 6 + int8 QAT-KD              ort-x86 int8, quantization-aware distillation
  8 row 6 + int4 weight-only         MatMulNBits, block-wise int4 weights, distillation repairs the rounding

Every student row runs once per seed (`--seeds`, 0 and 1 by default: the recipe's seed, which draws the
student's initialisation, the validation split and the batch order; the teacher is the same for all).
Held-out perplexity and token accuracy are ONNX Runtime's on the exported files (test packages held out
whole); the tables give the mean over seeds and every seed's value, and the goals are judged on the means.
tokens/s come from one `benchmark_generation` call over the first seed's files, teacher first (a row has
the same architecture under every seed; `write` checks that the parameter counts agree).

    python -m edgekd.data.stdlib runs/data/stdlib-source --source   # the data (seconds)
    python bench/language.py train   # through `cpujob work`: every row (results kept, resumable)
                                     # or the teacher alone (`train --only 1`), then rows in parallel jobs
                                     # (`train --only 2 --only 6 --seeds 1 …`): results.json is merged on every save
    python bench/language.py time    # through `cpujob timing`: greedy generation side by side, a minute
    python bench/language.py write   # the RESULTS.md section from the stored results
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
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
        self.recipe.setdefault("runtime", {}).update(teacher_signal(args.teacher_cache_k))
        self.results_file = self.workdir / "results.json"
        self.results: dict[str, Any] = json.loads(self.results_file.read_text()) if self.results_file.is_file() else {}
        self.pruned = {
            "prune": {"target_params": args.target_params, "steps": args.prune_steps, "hidden": True},
            "recover": {"epochs": args.student_epochs},
        }

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
            f"3c KD forward KL, top-{CACHE_K} teacher cache": {
                "student": small, "distill": {"divergence": "forward_kl"}, "stages": [scratch, export], "runtime": teacher_signal(CACHE_K),
            },
            "4 KD reverse KL": {"student": small, "distill": {"divergence": "reverse_kl"}, "stages": [scratch, export]},
            "5 KD JSD β 0.5": {"student": small, "distill": {"divergence": "jsd", "beta": 0.5}, "stages": [scratch, export]},
            "6 pruned + KD": {"stages": [self.pruned, export]},
            "7 pruned + KD + int8 QAT-KD": {"stages": [self.pruned, {"qat": {"profile": "ort-x86", "calibration_batches": 8}, "recover": {"epochs": 1, "lr": 0.0002}}, export]},
            "8 pruned + KD + int4 weight-only": {"stages": [self.pruned, {"qat": {"profile": "int4", "block_size": 32}, "recover": {"epochs": 1, "lr": 0.0002}}, export]},
        }

    def recipe_for(self, folder: str, change: dict, seed: int | None = None) -> dict:
        recipe = copy.deepcopy(self.recipe)
        recipe.update(name="bench-language", workdir=str(self.workdir / folder), stages=change["stages"])
        if seed is not None:
            recipe["seed"] = seed
        recipe["distill"].update(change.get("distill", {}))
        recipe["runtime"].update(change.get("runtime", {}))
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

    def student(self, name: str, change: dict, seed: int) -> None:
        key = seeded(name, seed)
        if key in self.results:
            return
        folder = f"row{name.split()[0]}-s{seed}"
        if change["stages"][0] is self.pruned:  # rows 6-8 share the pruning step: it runs once per seed, each row resumes a copy
            shared = self.workdir / f"pruned-s{seed}"
            if not (shared / "progress.json").is_file():
                shared_run = self.run(seeded("pruning step shared by rows 6-8", seed), self.recipe_for(shared.name, {"stages": [self.pruned]}, seed))
                self.results[seeded(SHARED, seed)] = {"minutes": shared_run["minutes"]}
                self.save()
            if not (self.workdir / folder).exists():
                shutil.copytree(shared, self.workdir / folder, ignore=shutil.ignore_patterns(".lock"))
        outcome = self.run(key, self.recipe_for(folder, change, seed))
        report = outcome["report"]
        files = report["student"]["onnx"]
        precision = "int4" if "int4" in files else "int8" if "int8" in files else "fp32"
        path = Path(files[precision]["path"])
        self.results[key] = {
            "minutes": outcome["minutes"], "precision": precision, "params": report["student"]["params"], "macs": report["student"]["macs"],
            "onnx": str(path if path.is_absolute() else self.workdir / folder / path), **measures(files[precision]),
            "fp32": measures(files["fp32"]), "teacher_cache": report.get("teacher_cache"),
        }
        self.save()


SHARED = "shared pruning step"
CACHE_K = 32  # row 3c: recovery reads the teacher's top-k cache as edgekd does by default (`auto`: 32 per token)


def teacher_signal(k: int) -> dict:
    """The recipe's runtime block: the live teacher (k = 0) or its per-token top-k cache."""
    return {"teacher_cache": False} if k == 0 else {"teacher_cache": True, "teacher_cache_top_k": k}
SEED = " | seed "


def seeded(name: str, seed: int) -> str:
    """The results key of a row's run under one seed."""
    return f"{name}{SEED}{seed}"


def by_row(results: dict) -> dict[str, dict[int, dict]]:
    """Row name → seed → stored results, rows in order (the teacher under seed 0)."""
    rows: dict[str, dict[int, dict]] = {}
    for key, entry in sorted(results.items()):
        name, _, seed = key.partition(SEED)
        if name[0].isdigit():
            rows.setdefault(name, {})[int(seed or 0)] = entry
    return rows


def measures(entry: dict) -> dict:
    return {key: entry.get(key) for key in ("accuracy", "perplexity", "exact_match")}


def train(bench: Bench) -> None:
    bench.teacher()
    for seed in bench.args.seeds:
        for name, change in bench.rows().items():
            if bench.args.only and not name.startswith(tuple(bench.args.only)):
                continue
            bench.student(name, change, seed)


def time_models(bench: Bench) -> None:
    """Greedy generation of the teacher and of every row's file under its first seed, side by side."""
    args, results = bench.args, bench.results
    files = {name: per_seed[min(per_seed)]["onnx"] for name, per_seed in by_row(results).items()}
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


def over_seeds(values: list[float], form: str) -> str:
    """The mean, then every seed's value: `104.5 (104.2, 104.8)`."""
    mean = form.format(statistics.mean(values))
    return f"{mean} ({', '.join(form.format(v) for v in values)})" if len(values) > 1 else mean


def mean_of(per_seed: dict[int, dict], key: str) -> float:
    return statistics.mean(entry[key] for entry in per_seed.values())


def gap_goals(rows: dict[str, dict[int, dict]], teacher: dict) -> list[tuple[str, bool | None, str]]:
    """Each KD row's share of the perplexity gap between CE from scratch (row 2) and the teacher, on the means;
    the per-seed shares pair the rows seed by seed."""
    scratch = rows.get("2 CE from scratch")
    if not scratch:
        return []
    goals = []
    gap = mean_of(scratch, "perplexity") - teacher["perplexity"]
    for name in ("3 KD forward KL", f"3c KD forward KL, top-{CACHE_K} teacher cache", "4 KD reverse KL", "5 KD JSD β 0.5", "6 pruned + KD"):
        if name not in rows:
            continue
        judged = name[1] == " " and not name.startswith("6")  # 3c (a storage variant) and row 6 (pruned, not from scratch) have no goal
        closed = (mean_of(scratch, "perplexity") - mean_of(rows[name], "perplexity")) / gap if gap > 0 else float("nan")
        paired = [(scratch[s]["perplexity"] - rows[name][s]["perplexity"]) / (scratch[s]["perplexity"] - teacher["perplexity"])
                  for s in sorted(rows[name]) if s in scratch]
        goal = "closes ≥ half the perplexity gap CE-from-scratch → teacher" + ("" if judged else " (no goal: for comparison)")
        goals.append((f"{name.split(' ', 1)[1]} {goal}", closed >= 0.5 if judged else None,
                      f"{closed:.0%} of {gap:.1f} ({mean_of(scratch, 'perplexity'):.1f} → {mean_of(rows[name], 'perplexity'):.1f}; "
                      f"teacher {teacher['perplexity']:.1f}); per seed {', '.join(f'{v:.0%}' for v in paired)}"))
    return goals


def write(bench: Bench) -> None:
    args, results = bench.args, bench.results
    rows = by_row(results)
    teacher = rows.pop("1 teacher")[0]
    speed = generation_table(results)
    batches = sorted({b for per in speed.values() for b in per})
    cells = ["1 teacher", "1", "fp32", f"{teacher['params'] / 1e6:.2f} M (100%)", f"{teacher['accuracy']:.2%}", f"{teacher['perplexity']:.1f}", f"{teacher['minutes']:.1f}"]
    lines = ["| " + " | ".join(cells + [f"{speed['1 teacher'][b]['tokens_per_s']:,.0f} (1.00×)" for b in batches]) + " |"]
    for name, per_seed in rows.items():
        first = per_seed[min(per_seed)]
        sizes = sorted({entry["params"] for entry in per_seed.values()})
        if len(sizes) > 1:
            raise SystemExit(f"{name}: the seeds' students differ in size ({sizes}); the timing of the first seed does not stand for them all")
        cells = [name, str(len(per_seed)), first["precision"], f"{first['params'] / 1e6:.2f} M ({first['params'] / teacher['params']:.0%})",
                 over_seeds([e["accuracy"] * 100 for e in per_seed.values()], "{:.2f}%"),
                 over_seeds([e["perplexity"] for e in per_seed.values()], "{:.1f}"), f"{mean_of(per_seed, 'minutes'):.1f}"]
        for batch in batches:
            timed = speed.get(name, {}).get(batch)
            cells.append(f"{timed['tokens_per_s']:,.0f} ({timed['speedup']:.2f}×, {timed['ci'][0]:.2f}–{timed['ci'][1]:.2f})" if timed else "—")
        lines.append("| " + " | ".join(cells) + " |")

    goals = gap_goals(rows, teacher)
    pruned = rows.get("6 pruned + KD")
    if pruned:
        share = next(iter(pruned.values()))["params"] / teacher["params"]
        goals.insert(0, ("row 6 pruned to ~1/3 of the teacher's parameters (the issue's size)", share <= 0.36, f"{share:.1%}"))
    for name, limit in (("7 pruned + KD + int8 QAT-KD", 0.03), ("8 pruned + KD + int4 weight-only", None)):
        if pruned and name in rows:
            change = mean_of(rows[name], "perplexity") / mean_of(pruned, "perplexity") - 1
            paired = [rows[name][s]["perplexity"] / pruned[s]["perplexity"] - 1 for s in sorted(rows[name]) if s in pruned]
            own = [e["perplexity"] / e["fp32"]["perplexity"] - 1 for e in rows[name].values()]  # the same weights' float export
            label = f"{next(iter(rows[name].values()))['precision']} within 3% of its fp32 parent's perplexity (row 6)" if limit else "int4 (no goal): perplexity vs row 6"
            goals.append((label, change <= limit if limit else None,
                          f"{mean_of(rows[name], 'perplexity'):.2f} vs {mean_of(pruned, 'perplexity'):.2f} ({change:+.1%}; per seed "
                          f"{', '.join(f'{v:+.1%}' for v in paired)}); vs its own float export {', '.join(f'{v:+.2%}' for v in own)}"))
    int8 = speed.get("7 pruned + KD + int8 QAT-KD", {}).get(1)
    if int8:
        goals.append(("pruned int8 student ≥ 2× the teacher's tokens/s at batch 1", int8["speedup"] >= 2,
                      f"{int8['speedup']:.2f}× ({int8['tokens_per_s']:,.0f} vs {speed['1 teacher'][1]['tokens_per_s']:,.0f} tokens/s; "
                      f"interval {int8['ci'][0]:.2f}–{int8['ci'][1]:.2f})"))
    goal_rows = "\n".join(f"| {goal} | {'—' if ok is None else 'met' if ok else '**not met**'} | {value} |" for goal, ok, value in goals)

    timing = "Generation was not timed yet (`python bench/language.py time`)."
    if speed:
        info = results["generation"]
        timing = (f"Generation ({info['date']}, `cpujob timing`: no other job ran; load average at the end {', '.join(f'{v:.2f}' for v in info['load'])}): "
                  f"one `benchmark_generation` call over the teacher and every row's seed-{min(args.seeds)} ONNX file, teacher first; greedy decoding in ONNX Runtime, 32-token "
                  f"prompts, 16 new tokens, no KV cache (each step re-reads the prefix), 2 threads; tokens/s = new tokens of the batch per "
                  f"second of the whole generation (median); speedup over the teacher = median ratio of interleaved blocks (confidence interval).")
    recipe = bench.recipe
    settings = results.get("generation", {}).get("bench", {}).get("timing", {})
    time_args = f" --rounds {settings['target_rounds']} --seconds {settings['min_duration_s']}" if settings else ""
    shared = [entry["minutes"] for key, entry in results.items() if key.startswith(SHARED)]
    trained = teacher["minutes"] + sum(e["minutes"] for per in rows.values() for e in per.values()) + sum(shared)
    cache = next((e["teacher_cache"] for per in rows.values() for e in per.values() if e.get("teacher_cache")), None)
    signal = (f"Every KD phase reads the teacher's per-token top-{args.teacher_cache_k} cache (`runtime.teacher_cache_top_k`)." if args.teacher_cache_k else
              "Every KD phase runs the teacher live (`runtime.teacher_cache: false`: its exact distributions)" + (
                  f"; row 3c is row 3 reading edgekd's default per-token cache instead (top {cache['k']} log-probabilities + the remaining mass, "
                  f"{cache['bytes_per_token']:.0f} bytes/token, the tail spread evenly; the teacher does not run)." if cache else "."))
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "torch-pruning", "onnxruntime", "tokenizers"))
    header = " | ".join(["row", "seeds", "ONNX file", "parameters (of teacher)", "token acc (ORT): mean (per seed)", "perplexity (ORT): mean (per seed)",
                         "train min/seed"] + [f"tokens/s b{b} (× teacher)" for b in batches])
    body = f"""Machine: {machine()}, {os.cpu_count()} cores, shared: training ran through `cpujob work` (one thread) beside five other
helpers' jobs (among them a ~40-minute benchmark), so its minutes are those of a loaded machine. Date: {stamp()}. Versions: {versions}.
Commands: `python -m edgekd.data.stdlib runs/data/stdlib-source --source`, `python bench/language.py train{f' --limit {args.limit}' if args.limit else ''} --teacher-epochs {args.teacher_epochs} --scratch-epochs {args.scratch_epochs} --student-epochs {args.student_epochs} --prune-steps {args.prune_steps} --target-params {args.target_params} --seeds {' '.join(map(str, args.seeds))}`
(run as parallel `--only` jobs; {trained:.0f} minutes of one-thread training in all, {trained / len(args.seeds):.0f} per seed; rows 6–8 of a seed share their pruning steps ({', '.join(f'{m:.1f}' for m in shared)} min, not in the rows' minutes: each row resumes a copy of them)), `python bench/language.py time{time_args}`, `python bench/language.py write --notes bench/language_notes.md`.

Data: `recipes/lm-stdlib.yaml`'s — chunks of 12 source lines of eight standard-library packages for training, json and
unittest held out whole for test; BPE vocabulary {recipe['data']['options']['tokenizer']['vocab_size']}, {recipe['data']['options']['max_length']} tokens; the teacher's tokenizer for every row.
Teacher `{recipe['teacher']['model']}`, {args.teacher_epochs} epochs of token cross-entropy (trained once, seed {recipe['seed']}, given to every other row as its checkpoint).
Seeds {', '.join(map(str, args.seeds))} for every student row (the recipe's seed: initialisation, validation split, batch order); cells give the mean and each seed's value; goals are judged on the means.
Rows 2–5: `{args.student}` from scratch, {args.scratch_epochs} epochs (`distill` stage, the teacher's lr {recipe['teacher']['train']['lr']}): row 2 `method: ce` (cross-entropy only),
rows 3–5 `method: kd`, α {recipe['distill']['alpha']}, T {recipe['distill']['temperature']}, with the divergence named. Row 6: the teacher pruned to
{args.target_params:.0%} of its parameters (`target_params`) in {args.prune_steps} steps — attention heads, MLP widths and the hidden size (`prune.hidden: true`:
embeddings, norms, every block's input and output, the vocabulary projection's input) — each step followed by {args.student_epochs} epochs
of forward-KL recovery. Rows 7/8: row 6 plus int8 QAT (ort-x86) / int4 weight-only (block 32), one epoch of distillation at lr 2e-4.
{signal} Perplexity and token accuracy are ONNX Runtime's on the exported file, on the held-out packages (real tokens only).

| {header} |
|{'---|' * (7 + len(batches))}
""" + "\n".join(lines) + f"""

{timing}

| goal (issue 17, 6a) | status | measured (means over seeds) |
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
    parser.add_argument("--student-epochs", type=int, default=3, help="epochs of recovery after each of row 6's pruning steps")
    parser.add_argument("--prune-steps", type=int, default=2, help="row 6's pruning steps")
    parser.add_argument("--target-params", type=float, default=0.36, help="row 6's pruning target, a fraction of the teacher's parameters")
    parser.add_argument("--only", action="append", default=[], help="train only the rows whose names start with this (and the teacher)")
    parser.add_argument("--teacher-cache-k", type=int, default=0,
                        help="0: every KD row runs the teacher live (exact distributions); k: rows read its per-token top-k cache")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="the seeds every student row runs with")
    parser.add_argument("--notes", type=Path, help="write: a markdown file appended to the section (the reading of the figures, by hand)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    bench = Bench(args)
    {"train": train, "time": time_models, "write": write}[args.part](bench)


if __name__ == "__main__":
    main()
