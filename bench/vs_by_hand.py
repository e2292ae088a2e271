"""Same teacher, same student budget: edgekd against a by-hand fine-tune (issue 14).

Two teachers of `recipes/fashion-mnist.yaml`'s architecture, trained with the recipe's augmentation:
a well-trained one (`--teacher-epochs`, 12) and an under-trained one (4 epochs), as users bring them.
For each teacher and seed, with the same augmentation and the same number of student epochs:

  by hand  torch-pruning one-shot to 1/3 of the teacher's MACs (group L2, widths rounded to 8, through
           edgekd's pruner), cross-entropy fine-tuning for the recipe's student epoch budget, then
           ONNX Runtime's quantize_static (QDQ, u8 activations, s8 per-channel weights, 32 training batches);
  edgekd   the recipe as shipped (prune in steps with distillation, quantization-aware distillation,
           export), the teacher given as a checkpoint.

Plus ablations on one seed: the recipe with the distillation settings edgekd had before this issue
(α = 0.9 throughout, soft targets on every sample), and without augmentation.

Accuracy is ONNX Runtime's on the exported file, all 10k test images. Latency is deployment mode:
every model alone in a fresh process with ONNX Runtime's default session options, rounds rotating
the order (see `deployment_latency`).

    python bench/vs_by_hand.py train   # through `cpujob work`: teachers (kept), students, ORT accuracy
    python bench/vs_by_hand.py time    # through `cpujob timing`: deployment-mode latency, a few minutes
    python bench/vs_by_hand.py write   # the RESULTS.md section from the stored results

Every finished run is kept in --workdir (results.json and each run's folder), so the parts resume."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import statistics
import time
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

import edgekd
from common import machine, replace_section, stamp
from edgekd.bench import benchmark
from edgekd.data import load_data
from edgekd.export.runtime import onnx_accuracy, ort_quantize_static
from edgekd.recipe import load_recipe

RECIPE = Path(__file__).parents[1] / "recipes" / "fashion-mnist.yaml"
TEACHERS = {"well-trained": None, "under-trained": 4}  # None: --teacher-epochs
BY_HAND = {"target_macs": 0.33, "steps": 1, "importance": "group_l2", "round_to": 8}
CALIBRATION_BATCHES = 32
BEFORE = {"alpha": 0.9, "alpha_end": None, "kd_on": "all"}  # edgekd's distillation before this issue


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir: Path = args.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.recipe = yaml.safe_load(RECIPE.read_text())
        self.recipe.pop("gates", None)
        self.recipe["data"]["limit"] = args.limit
        self.stages = [s for s in self.recipe["stages"] if "bench" not in s]  # timed here, in deployment mode
        self.student_epochs = sum(
            (s.get("recover") or {}).get("epochs", self.recipe["distill"].get("epochs", 2)) * (s.get("prune", {}).get("steps", 1))
            for s in self.stages if "prune" in s or "qat" in s
        )
        self.results_file = self.workdir / "results.json"
        self.results: dict[str, Any] = json.loads(self.results_file.read_text()) if self.results_file.is_file() else {}
        self.data = {}

    def save(self) -> None:
        self.results_file.write_text(json.dumps(self.results, indent=2) + "\n")

    def dataset(self, seed: int):
        if seed not in self.data:
            self.data[seed] = load_data("fashion-mnist", seed=seed, limit=self.args.limit)
        return self.data[seed]

    def recipe_for(self, name: str, seed: int, stages: list, *, teacher: dict, distill: dict | None = None, augment: bool = True) -> dict:
        recipe = copy.deepcopy(self.recipe)
        recipe.update(name="vs-by-hand", seed=seed, workdir=str(self.workdir / name), stages=stages, teacher=teacher)
        recipe["distill"].update(distill or {})
        if not augment:
            recipe["data"]["augment"] = []
        return recipe

    def run(self, name: str, recipe: dict) -> dict:
        started = time.perf_counter()
        report = edgekd.compress(recipe, resume=True, quiet=True).to_json()
        minutes = (time.perf_counter() - started) / 60
        print(f"{name}: {report['student']['accuracy']:.2%} (PyTorch), {report['student']['macs']:,} MACs, {minutes:.1f} min", flush=True)
        return {"report": report, "minutes": round(minutes, 2)}

    # ---- the parts -------------------------------------------------------------------------
    def teacher(self, label: str) -> dict:
        if label in self.results.get("teachers", {}):
            return self.results["teachers"][label]
        epochs = TEACHERS[label] or self.args.teacher_epochs
        trained = {**self.recipe["teacher"], "train": {**self.recipe["teacher"]["train"], "epochs": epochs}}
        outcome = self.run(f"teacher-{label}", self.recipe_for(f"teacher-{label}", 0, [{"export": {"opset": 17}}], teacher=trained))
        folder = self.workdir / f"teacher-{label}"
        onnx_file = folder / "teacher.onnx"
        entry = {
            "epochs": epochs, "minutes": outcome["minutes"], "checkpoint": str(next(folder.glob("teacher-*.pt"))),
            "onnx": str(onnx_file), "accuracy": onnx_accuracy(onnx_file, self.dataset(0).loader("test", 512)),
            "val_accuracy": outcome["report"]["teacher"]["val_accuracy"], "macs": outcome["report"]["teacher"]["macs"],
        }
        self.results.setdefault("teachers", {})[label] = entry
        self.save()
        return entry

    def student(self, key: str, make: Any) -> dict:
        if key not in self.results.get("students", {}):
            self.results.setdefault("students", {})[key] = make()
            self.save()
        return self.results["students"][key]

    def by_hand(self, label: str, seed: int) -> dict:
        def make() -> dict:
            teacher = self.teacher(label)
            name = f"{label}-by-hand-s{seed}"
            stage = {"prune": BY_HAND, "recover": {"epochs": self.student_epochs, "alpha": 0.0, "alpha_end": None, "kd_on": "all"}}
            outcome = self.run(name, self.recipe_for(name, seed, [stage], teacher={"model": self.recipe["teacher"]["model"], "checkpoint": teacher["checkpoint"]}))
            fp32 = Path(edgekd.export_run(self.workdir / name).student.onnx["fp32"].path)
            fp32 = fp32 if fp32.is_absolute() else self.workdir / name / fp32
            int8 = self.workdir / name / "student.ort-ptq.onnx"
            data = self.dataset(seed)
            loader = data.loader("train", self.recipe["data"]["batch_size"], shuffle=True, seed=seed)
            ort_quantize_static(fp32, int8, [x.numpy() for x, _ in islice(loader, CALIBRATION_BATCHES)])
            return self.summary(outcome, int8, seed)

        return self.student(f"{label}/by hand/{seed}", make)

    def edgekd(self, label: str, seed: int, variant: dict | None = None) -> dict:
        """The recipe with the teacher `label`; `variant` may replace its `distill` settings (merged),
        its `stages` or switch `augment` off."""
        variant = variant or {}
        name = self.variant(variant)

        def make() -> dict:
            teacher = self.teacher(label)
            folder = f"{label}-edgekd-{hashlib.sha256(name.encode()).hexdigest()[:8]}-s{seed}"
            recipe = self.recipe_for(
                folder, seed, variant.get("stages", self.stages),
                teacher={"model": self.recipe["teacher"]["model"], "checkpoint": teacher["checkpoint"]},
                distill=variant.get("distill"), augment=variant.get("augment", True),
            )
            outcome = self.run(folder, recipe)
            return self.summary(outcome, self.workdir / folder / "student.int8.onnx", seed)

        return self.student(f"{label}/{name}/{seed}", make)

    def variant(self, variant: dict | None = None) -> str:
        """A row's name from what it runs: `edgekd prune 2×3 + QAT 2 epochs, α 0.9→0.5, kd_on teacher_correct`."""
        variant = variant or {}
        recipe = copy.deepcopy(self.recipe)
        recipe["distill"].update(variant.get("distill") or {})
        recipe["stages"] = variant.get("stages", self.stages)
        loaded = load_recipe(recipe)
        parts = []
        for planned in loaded.plan:
            epochs = planned.recover.epochs if planned.recover else 0
            lr = f" at lr {planned.recover.optimizer.lr:g}" if planned.recover else ""
            if planned.key == "prune":
                parts.append(f"prune {planned.stage.num_steps()}×{epochs}{lr}")
            elif planned.key == "qat":
                parts.append(f"QAT {epochs}{lr}")
        settings = loaded.distill
        alpha = f"{settings.alpha:g}" + (f"→{settings.alpha_end:g}" if settings.alpha_end is not None else "")
        augment = "" if variant.get("augment", True) else ", no augmentation"
        return f"edgekd {' + '.join(parts)} epochs, α {alpha}, kd_on {settings.kd_on}{augment}"

    def summary(self, outcome: dict, int8: Path, seed: int) -> dict:
        report = outcome["report"]
        return {
            "accuracy": onnx_accuracy(int8, self.dataset(seed).loader("test", 512)),
            "onnx": str(int8), "macs": report["student"]["macs"], "params": report["student"]["params"],
            "minutes": outcome["minutes"], "teacher_cache": report.get("teacher_cache"),
            "steps": [{k: step.get(k) for k in ("stage", "step", "accuracy", "val_accuracy", "teacher_val_accuracy", "passes_teacher", "recovery_seconds")} for step in report["steps"]],
        }


def train(bench: Bench) -> None:
    for label in TEACHERS:
        bench.teacher(label)
    if bench.args.only == "teachers":
        return
    for label in TEACHERS:  # seed 0 with the ablations first: they are what the recipe's settings rest on
        bench.edgekd(label, 0)
        bench.by_hand(label, 0)
        bench.edgekd(label, 0, {"distill": BEFORE})
        for extra in bench.args.variant:
            bench.edgekd(label, 0, json.loads(extra))
        if bench.args.ablations > 1:
            bench.edgekd(label, 0, {"augment": False})
    if bench.args.only == "seed0":
        return
    for label in TEACHERS:
        for seed in range(1, bench.args.seeds):
            bench.edgekd(label, seed)
            bench.by_hand(label, seed)


# ---- deployment-mode latency ----------------------------------------------------------------
def deployment_latency(files: dict[str, str], batches: list[int], rounds: int, seconds: float) -> dict:
    """edgekd's own deployment mode (`edgekd bench`, the default): every model alone in a fresh process
    per round with ONNX Runtime's default session options (spinning on), rounds rotating the order.
    Per model and batch: the median of the per-process medians, and the speedup over the first model
    (median over rounds of the per-round ratio, with its confidence interval)."""
    staged = Path(files[next(iter(files))]).parents[1] / "deployed"
    staged.mkdir(exist_ok=True)
    named = {}
    for index, (name, path) in enumerate(files.items()):
        named[name] = f"m{index}"
        shutil.copyfile(path, staged / f"m{index}.onnx")
    measured = benchmark([staged / f"{m}.onnx" for m in named.values()], rounds=rounds, batch_sizes=batches,
                         min_duration_s=seconds, memory=False, roofline=False)
    table = {}
    for name, model in named.items():
        table[name] = {}
        for batch in batches:
            case = measured.case(model, batch)
            speedup = None if model == "m0" else measured.ratio(model, batch).inverted()
            table[name][str(batch)] = {
                "median_ms": case.median_ms, "finding": case.finding,
                "speedup": 1.0 if speedup is None else speedup.median_ratio,
                "speedup_ci": [1.0, 1.0] if speedup is None else [speedup.ci_low, speedup.ci_high],
            }
    return {"models": table, "rounds": rounds, "seconds": seconds, "bench": measured.to_json()}


def timed_files(bench: Bench) -> dict[str, str]:
    results = bench.results
    files = {"teacher fp32": results["teachers"]["well-trained"]["onnx"]}
    for label in TEACHERS:
        files[f"{label}: by hand int8"] = results["students"][f"{label}/by hand/0"]["onnx"]
        files[f"{label}: edgekd int8"] = results["students"][f"{label}/{bench.variant()}/0"]["onnx"]
    return files


def time_models(bench: Bench) -> None:
    args = bench.args
    started = time.perf_counter()
    latency = deployment_latency(timed_files(bench), [1, 64], args.rounds, args.seconds)
    latency.update(minutes=round((time.perf_counter() - started) / 60, 1), date=stamp(), load=os.getloadavg())
    bench.results["latency"] = latency
    bench.save()
    print(json.dumps(latency["models"], indent=1))


# ---- the results section --------------------------------------------------------------------
def points(values: list[float]) -> str:
    mean = statistics.mean(values) * 100
    return f"{mean:.2f}" + (f" ± {statistics.stdev(values) * 100:.2f}" if len(values) > 1 else "") + f" ({', '.join(f'{v:.2%}' for v in values)})"


def write(bench: Bench) -> None:
    args, results = bench.args, bench.results
    students, teachers = results["students"], results["teachers"]
    latency = results.get("latency", {}).get("models", {})

    def rows_of(label: str, method: str) -> list[dict]:
        return [entry for key, entry in sorted(students.items()) if key.startswith(f"{label}/{method}/")]

    recipe_variant = bench.variant()
    methods = ["by hand", recipe_variant, *sorted({key.split("/")[1] for key in students} - {"by hand", recipe_variant})]

    lines, goals = [], []
    for label, teacher in teachers.items():
        lines.append(f"| **{label} teacher** ({teacher['epochs']} epochs), fp32 | {teacher['accuracy']:.2%} | — | {teacher['macs'] / 1e6:.2f} M | {teacher['minutes']:.0f} | |")
        for method in methods:
            entries = rows_of(label, method)
            if not entries:
                continue
            accuracies = [e["accuracy"] for e in entries]
            gap = statistics.mean(accuracies) - teacher["accuracy"]
            passes = [f"{sum(bool(s['passes_teacher']) for s in e['steps'])}/{len(e['steps'])}" for e in entries]
            cache = entries[0].get("teacher_cache") or {}
            cache_text = f"{cache['views']} views, {cache['bytes'] / 2**20:.1f} MiB, {cache['build_seconds']:.0f} s" if cache else ""
            name = f"**{method} (the recipe)**" if method == recipe_variant else method
            name += " (before this issue)" if method == bench.variant({"distill": BEFORE}) else ""
            lines.append(
                f"| {label}: {name}, int8 | {points(accuracies)} | {gap * 100:+.2f} | {entries[0]['macs'] / 1e6:.2f} M | "
                f"{statistics.mean(e['minutes'] for e in entries):.0f} | {', '.join(passes)} {cache_text} |"
            )
        hand = statistics.mean(e["accuracy"] for e in rows_of(label, "by hand"))
        ours = statistics.mean(e["accuracy"] for e in rows_of(label, recipe_variant))
        goals.append((f"{label}: edgekd int8 at least as accurate as by hand", ours >= hand, f"{ours:.2%} vs {hand:.2%} ({(ours - hand) * 100:+.2f} points)"))
        if latency:
            for batch in ("1", "64"):
                mine, theirs = latency[f"{label}: edgekd int8"][batch]["median_ms"], latency[f"{label}: by hand int8"][batch]["median_ms"]
                goals.append((f"{label}: edgekd int8 at least as fast as by hand, batch {batch}", mine <= theirs, f"{mine:.3f} vs {theirs:.3f} ms"))
        if label == "well-trained":
            macs = rows_of(label, recipe_variant)[0]["macs"] / teacher["macs"]
            goals.append(("well-trained: edgekd within 0.3 points of the teacher at ≤ 1/3 of its MACs",
                          teacher["accuracy"] - ours <= 0.003 and macs <= 1 / 3, f"{(ours - teacher['accuracy']) * 100:+.2f} points at {macs:.1%} of the MACs"))

    timing = ""
    if latency:
        info = results["latency"]
        rows = "\n".join(
            f"| {name} | " + " | ".join(f"{m[b]['median_ms']:.3f}{' ⚑' if m[b]['finding'] else ''} | {m[b]['speedup']:.2f}× ({m[b]['speedup_ci'][0]:.2f}–{m[b]['speedup_ci'][1]:.2f})" for b in ("1", "64")) + " |"
            for name, m in latency.items()
        )
        timing = f"""
Latency, deployment mode ({info['date']}, `cpujob timing`, the machine otherwise idle; load average at the end
{', '.join(f'{v:.2f}' for v in info['load'])}): edgekd's deployment mode — each model alone in a fresh Python process with
ONNX Runtime's default session options (spinning on, all {os.cpu_count()} cores), ≥ {info['seconds']:g} s timed, {info['rounds']} rounds
rotating the order. ms = median of the per-process medians (⚑: multi-modal across processes); speedup over the
teacher = median over rounds of the per-round ratio (confidence interval).

| model (seed 0) | ms b1 | speedup b1 | ms b64 | speedup b64 |
|---|---|---|---|---|
{rows}
"""
    goal_rows = "\n".join(f"| {goal} | {'met' if ok else '**not met**'} | {value} |" for goal, ok, value in goals)
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "torch-pruning", "onnxruntime", "kornia"))
    recipe = bench.recipe
    distill = load_recipe(recipe).distill  # the settings in effect, defaults included
    body = f"""Machine: {machine()}, {os.cpu_count()} cores, shared with other helpers' work (training ran through
`cpujob work`, one thread). Date: {stamp()}. Versions: {versions}.
Commands: `python bench/vs_by_hand.py train --limit {args.limit} --seeds {args.seeds}` (~{sum(e['minutes'] for e in students.values()) + sum(t['minutes'] for t in teachers.values()):.0f} minutes of training),
`python bench/vs_by_hand.py time`, `python bench/vs_by_hand.py write`.

Fashion-MNIST, **training subset**: `data.limit: {args.limit}` ({int(args.limit * 0.9):,} train / {int(args.limit * 0.1):,} validation images,
to fit the CPU budget; every accuracy is ONNX Runtime's on all 10,000 test images). Augmentation everywhere
(teachers and students, both sides): `{yaml.safe_dump(recipe['data']['augment'], default_flow_style=True).strip()}`.
Teachers `{recipe['teacher']['model']}` trained with it (SGD lr {recipe['teacher']['train']['lr']}, cosine, batch {recipe['data']['batch_size']}).
Student budget: {bench.student_epochs} epochs on both sides. By hand: `{yaml.safe_dump(BY_HAND, default_flow_style=True).strip()}` one-shot, {bench.student_epochs} epochs of
cross-entropy (lr {recipe['distill']['lr']}, cosine), then ORT quantize_static on {CALIBRATION_BATCHES} un-augmented training batches. edgekd: `recipes/fashion-mnist.yaml`
as shipped (distill `{yaml.safe_dump({k: getattr(distill, k) for k in ('alpha', 'alpha_end', 'kd_on', 'temperature')}, default_flow_style=True).strip()}`,
`augment_views: {load_recipe(recipe).data.augment_views}`), teacher given as its checkpoint. "before this issue": the same with
`{yaml.safe_dump(BEFORE, default_flow_style=True).strip()}`. Accuracy rows give mean ± std over seeds (each seed's value in brackets);
"passes" counts the recovery steps where the student's validation accuracy exceeded the teacher's (per seed);
the cache column is the soft-label cache of the first seed (views stored, size, build time).

| model | test acc % (ORT) | vs teacher, points | MACs | minutes | passes teacher (val) · soft-label cache |
|---|---|---|---|---|---|
""" + "\n".join(lines) + f"""
{timing}
| goal | status | measured |
|---|---|---|
{goal_rows}
"""
    replace_section("Same teacher, same budget: edgekd vs a by-hand fine-tune, with augmentation (issue 14)", body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["train", "time", "write"])
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-vs-by-hand"))
    parser.add_argument("--limit", type=int, default=30000, help="training images used (teachers and students), for the CPU budget")
    parser.add_argument("--teacher-epochs", type=int, default=12, help="the well-trained teacher's epochs")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--ablations", type=int, default=1, help="1: the pre-issue distillation settings; 2: also without augmentation")
    parser.add_argument("--variant", action="append", default=[], help='more settings to run on seed 0, as JSON: \'{"distill": {"alpha": 0.5}, "stages": [...]}\'')
    parser.add_argument("--only", choices=["teachers", "seed0"], help="train only the teachers, or only seed 0 and the ablations")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    bench = Bench(args)
    {"train": train, "time": time_models, "write": write}[args.part](bench)


if __name__ == "__main__":
    main()
