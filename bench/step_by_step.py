"""Distilling step by step, the paper's comparison at small scale, offline (issue 18 item 3).

Task: SYNTHETIC multi-step arithmetic word problems (`edgekd.data.wordproblems`, SVAMP-like, 45
templates, 2 to 4 steps) with every number, drawn or computed, in [2, `--max-value`] (20 by default).
Nothing here is pretrained: with answers up to 1000 a model trained from scratch on a few thousand
problems cannot learn the multi-digit arithmetic, and every model of the first run sat at the
constant-answer floor; small numbers keep the language, the steps and the rationales, and make each
`a op b = c` one of a few hundred facts that a small model can learn. The answer is a checkable integer.

1. A teacher (a larger `t5_s`) is trained on a seed set of problems with gold rationales, in the answer
   format of a `TeacherPrompting` (" <rationale> The answer is <label>."). It is not told the answers of
   the training inputs: it writes a rationale and a label for each of them through `teacher_rationales`
   (batched, cached, parsed), so its rationales and labels carry its real errors.
2. Students, all the same small `t5_s`, train on 12.5/25/50/100% of the training inputs (the same subset
   for every method at a given fraction and seed), for the same number of optimizer steps:
   - label-only fine-tuning on the ground-truth labels;
   - standard distillation on the teacher's labels;
   - step-by-step, rationale `separate` (the paper: two tasks, α = 0.5);
   - step-by-step, rationale `after_label` (Wadhwa et al., 2024: one target, label first);
   - optional (`--methods ...,before`), step-by-step, rationale `before_label` (chain of thought: at
     inference the student writes its rationale, then the label; it trains and answers about twice as slowly).
   Step-by-step uses the teacher's rationales with the labels of `--sbs-labels` (ground truth by
   default, the paper's comparison with fine-tuning).
3. Every student is scored by exact match of the label on a held-out test split (the `predict:` task
   alone, greedy); the teacher is scored on the same split; the floor is always answering the most
   frequent training answer.
4. The best student whose `predict:` target is the label alone (label-only, standard distillation,
   step-by-step separate: what the runner's one-target generate data describes) is compressed with
   `edgekd.compress`: prune → int8 QAT-distill → export (exact match of the label in ONNX Runtime over
   the whole test split). The teacher is exported too, for the tokens/s comparison of `--time`.

    PYTHONPATH=$PWD /work/bin/cpujob work python bench/step_by_step.py --probe   # teacher + one student of each kind
    PYTHONPATH=$PWD /work/bin/cpujob work python bench/step_by_step.py           # the run; writes results.json, RESULTS.md
    # or the seeds as jobs side by side, then one job that merges, compresses and writes:
    ... bench/step_by_step.py --only-seed 0 &  ... bench/step_by_step.py --only-seed 1; ... bench/step_by_step.py --merge
    PYTHONPATH=$PWD /work/bin/cpujob timing python bench/step_by_step.py --time  # tokens/s of the ONNX files; rewrites
    PYTHONPATH=$PWD python bench/step_by_step.py --write --notes FILE            # RESULTS.md from results.json + notes

The teacher's weights are cached in the workdir by its settings, so `--probe` and the run share one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, replace_section, stamp  # noqa: E402

from edgekd.data.rationales import RationaleExample, exact_match, write_jsonl  # noqa: E402
from edgekd.data.tokenizer import TokenizerTraining, train_tokenizer  # noqa: E402
from edgekd.data.wordproblems import make_splits  # noqa: E402
from edgekd.distill.generation_cache import module_digest, teacher_rationales  # noqa: E402
from edgekd.distill.prompting import TeacherPrompting  # noqa: E402
from edgekd.distill.sequence import greedy_generate_fn  # noqa: E402
from edgekd.distill.stepbystep import StepByStepConfig  # noqa: E402
from edgekd.distill.stepbystep_train import (  # noqa: E402
    label_exact_match, text_tokens, train_prompted_teacher, train_text_student,
)
from edgekd.models.transformer import t5_s  # noqa: E402

ROOT = Path(__file__).resolve().parent
SECTION = "Distilling step by step on synthetic word problems (issue 18)"
MAX_LENGTH = 160  # positions of every model: questions are ≤ 80 tokens, answers with rationales ≤ 100


def _config(**settings) -> StepByStepConfig:
    return StepByStepConfig(**settings)


METHODS = {
    # key: (name, config, trains on rationales)
    "label": ("label-only (ground truth)", _config(label_source="ground_truth", rationale_position="after_label"), False),
    "distill": ("standard distillation (teacher labels)", _config(label_source="teacher", rationale_position="after_label"), False),
    "separate": ("step-by-step, separate", _config(rationale_position="separate"), True),
    "after": ("step-by-step, after_label", _config(rationale_position="after_label"), True),
    "before": ("step-by-step, before_label (CoT at inference)", _config(rationale_position="before_label"), True),
}
LABEL_ALONE = ("label", "distill", "separate")  # their predict: target is the label alone: one runner target
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-value", type=int, default=20, help="every number of a problem lies in [2, max-value]")
    parser.add_argument("--seed-set", type=int, default=3000, help="problems with gold rationales the teacher learns from")
    parser.add_argument("--train", type=int, default=1600, help="training inputs (the teacher labels them)")
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--teacher", default="dim=128,depth=3,heads=4")
    parser.add_argument("--student", default="dim=64,depth=2,heads=4")
    parser.add_argument("--teacher-epochs", type=int, default=13)
    parser.add_argument("--student-steps", type=int, default=600, help="optimizer steps of every student")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    parser.add_argument("--methods", default="label,distill,separate,after", help=f"of {', '.join(METHODS)}")
    parser.add_argument("--sbs-labels", choices=("ground_truth", "teacher"), default="ground_truth")
    parser.add_argument("--compress-epochs", type=int, default=1, help="recovery epochs of each compression step")
    parser.add_argument("--no-compress", action="store_true")
    parser.add_argument("--only-seed", type=int, help="train the students of this seed only (jobs side by side), then --merge")
    parser.add_argument("--merge", action="store_true", help="combine the --only-seed jobs of seeds 0..seeds-1, compress, write")
    parser.add_argument("--workdir", default="runs/step_by_step")
    parser.add_argument("--probe", action="store_true", help="train the teacher, time one student of each kind at 100%% and stop")
    parser.add_argument("--time", action="store_true", help="tokens/s of the exported files (run through cpujob timing)")
    parser.add_argument("--write", action="store_true", help="rewrite RESULTS.md and the plot from the workdir's results.json")
    parser.add_argument("--notes", help="a markdown file appended to the section (the hand-written findings)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    return parser.parse_args()


def sizes(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in text.split(","))}


def as_example(problem) -> RationaleExample:
    record = problem.record()
    return RationaleExample(record["input"], record["label"], record["rationale"])


def build_tokens(seed_set, train, prompting: TeacherPrompting, workdir: Path):
    """BPE on what the models read and write: questions of seed and training sets, the seed answers,
    the markers. Saved in the workdir: the compression run reads the same tokenizer.json."""
    texts = [e.input for e in seed_set + train] + [prompting.answer.format(rationale=e.rationale, label=e.label) for e in seed_set]
    texts += [c.label_prefix + c.rationale_prefix + c.explanation_marker + c.answer_marker for _, c, _ in METHODS.values()]
    tokenizer = train_tokenizer(texts, TokenizerTraining(kind="bpe", vocab_size=512))
    tokenizer.save(workdir / "tokenizer")
    return tokenizer, text_tokens(tokenizer)


def spec(shape: dict[str, int], tokenizer) -> str:
    """The model as an edgekd model spec, so the compression run rebuilds exactly the trained one."""
    settings = {**shape, "vocab_size": tokenizer.vocab_size, "max_length": MAX_LENGTH, "pad_id": tokenizer.pad_id}
    return "t5_s(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"


def model(shape: dict[str, int], tokenizer, seed: int):
    torch.manual_seed(seed)
    return t5_s(vocab_size=tokenizer.vocab_size, max_length=MAX_LENGTH, pad_id=tokenizer.pad_id, **shape)


def teacher_stage(args, seed_set, train, test, tokens, tokenizer, prompting, workdir: Path) -> dict:
    """Train the teacher on the seed set (or load it: cached by its settings), have it write rationales
    and labels for the training inputs and answer the test split."""
    teacher = model(sizes(args.teacher), tokenizer, seed=1000)
    settings = {k: getattr(args, k) for k in ("max_value", "seed_set", "train", "test", "teacher", "teacher_epochs", "batch_size", "lr")}
    weights = workdir / f"teacher-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}.pt"
    started = time.perf_counter()
    log = weights.with_suffix(".json")  # how the cached teacher was made: its training and generation times
    if weights.exists():
        teacher.load_state_dict(torch.load(weights, weights_only=True))
        made = json.loads(log.read_text()) if log.exists() else {}
    else:
        losses = train_prompted_teacher(
            teacher, seed_set, prompting, tokens, "seq2seq", epochs=args.teacher_epochs, batch_size=args.batch_size, lr=args.lr,
        )
        torch.save(teacher.state_dict(), weights)
        made = {"train_seconds": time.perf_counter() - started, "final_loss": losses[-1]}
    generate = greedy_generate_fn(teacher, tokens, "seq2seq", max_new_tokens=prompting.max_new_tokens)
    started = time.perf_counter()
    cache = workdir / "generations"
    labelled, summary = teacher_rationales(generate, train, prompting, cache, module_digest(teacher), batch_size=64)
    test_outputs, test_summary = teacher_rationales(generate, test, prompting, cache, module_digest(teacher), batch_size=64)
    if summary["generated"]:  # written now, not read from the cache
        made["generate_seconds"] = time.perf_counter() - started
        log.write_text(json.dumps(made))
    parsed = {e.input: e.teacher_label for e in test_outputs}
    return {
        "model": teacher, "weights": str(weights), "labelled": labelled, **made, "params": sum(p.numel() for p in teacher.parameters()),
        "summary": {k: v for k, v in summary.items() if k not in ("cache", "unparsed_examples")},
        "test_em": exact_match([parsed.get(e.input, "") for e in test], [e.label for e in test]),
        "test_unparsed": test_summary["unparsed"],
        "quality": rationale_quality(labelled, {e.input: e for e in train}),
    }


CALCULATION = re.compile(r"(\d+(?: [-+*/] \d+)+) = (\d+)")


def _true(expression: str, result: str) -> bool:
    try:
        return eval(expression) == int(result)  # noqa: S307 (digits, spaces and + - * / only, by the pattern)
    except ZeroDivisionError:
        return False


def rationale_quality(written: list[RationaleExample], gold: dict[str, RationaleExample]) -> dict[str, float]:
    """How the teacher's rationales went wrong: the share of its `a op b (op c) = d` statements that are
    true arithmetic, and of rationales whose sequence of operations is the gold rationale's (the plan)."""
    statements = true = same_plan = 0

    def plan(text: str | None) -> list[str]:
        return [re.sub(r"\d+", "", expression).replace(" ", "") for expression, _ in CALCULATION.findall(text or "")]

    for example in written:
        steps = CALCULATION.findall(example.rationale or "")
        statements += len(steps)
        true += sum(_true(expression, result) for expression, result in steps)
        same_plan += plan(example.rationale) == plan(gold[example.input].rationale)
    return {"true_statements": true / max(1, statements), "same_plan": same_plan / max(1, len(written))}


def subset(examples: list[RationaleExample], fraction: float, seed: int) -> list[RationaleExample]:
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    return [examples[i] for i in sorted(order[: max(1, round(fraction * len(examples)))])]


def method_config(args, key: str) -> StepByStepConfig:
    _, config, rationales = METHODS[key]
    return StepByStepConfig(**{**config.__dict__, "label_source": args.sbs_labels}) if rationales else config


def student_run(args, key, examples, teacher_by_input, test, tokens, tokenizer, seed, answer_tokens: int):
    """Train one student; returns its test exact match, training seconds, the model and its training data."""
    _, _, rationales = METHODS[key]
    config = method_config(args, key)
    uses_teacher = config.label_source == "teacher" or rationales
    data = [teacher_by_input[e.input] for e in examples if e.input in teacher_by_input] if uses_teacher else examples
    if not data:  # the teacher's outputs for these inputs all failed to parse: nothing to train on
        return 0.0, 0.0, None, data
    epochs = max(1, -(-args.student_steps // -(-len(data) // args.batch_size)))
    student = model(sizes(args.student), tokenizer, seed=seed)
    started = time.perf_counter()
    train_text_student(
        student, data, config, tokens, "seq2seq", rationales=rationales, epochs=epochs, batch_size=args.batch_size,
        lr=args.lr, seed=seed,
    )
    seconds = time.perf_counter() - started
    # The label (2 tokens at most here) and a marker, or under before_label a whole rationale first.
    new_tokens = answer_tokens if config.rationale_position == "before_label" else 10
    em, _ = label_exact_match(student, test, config, tokens, "seq2seq", max_new_tokens=new_tokens)
    return em, seconds, student, data


def constant_answer_floor(train: list[RationaleExample], test: list[RationaleExample]) -> tuple[str, float]:
    """Exact match of always answering the most frequent training label: what a student scores that learned nothing else."""
    most_frequent = Counter(e.label for e in train).most_common(1)[0][0]
    return most_frequent, exact_match([most_frequent] * len(test), [e.label for e in test])


def compress_best(args, best: dict, teacher: dict, tokenizer, train, test, workdir: Path) -> dict:
    """prune → int8 QAT-distill → export of the best student, through `edgekd.compress` on a recipe with
    the label task as data (`predict: <question>` → label); and the teacher exported alone, for speed."""
    import edgekd

    folder = workdir / "compress"
    data = folder / "data"
    config = method_config(args, best["key"])
    # Every training input, with the label the chosen student trained on where it had one (teacher labels
    # under standard distillation), else the ground truth.
    rows = [{"input": config.label_prefix + e.input, "target": best["labels"].get(e.input, e.label)} for e in train]
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "test.jsonl", [{"input": config.label_prefix + e.input, "target": e.label} for e in test])
    torch.save(best["model"].state_dict(), folder / "best_student.pt")

    def recipe(name: str, model_spec: str, checkpoint: str, stages: list) -> dict:
        return {
            "name": name, "seed": 0, "device": "cpu", "workdir": str(folder / name),
            "data": {"dataset": "text", "root": str(data), "batch_size": args.batch_size, "val_split": 0.1,
                     "options": {"task": "generate", "layout": "seq2seq", "input": "input", "target": "target",
                                 "max_length": MAX_LENGTH, "tokenizer": str(workdir / "tokenizer" / "tokenizer.json")}},
            "teacher": {"model": model_spec, "checkpoint": checkpoint},
            "student": "teacher",
            "distill": {"method": "kd", "divergence": "forward_kl", "alpha": 0.5, "temperature": 1.0,
                        "epochs": args.compress_epochs, "lr": 5e-4, "optimizer": {"name": "adamw", "weight_decay": 0.01}},
            "stages": stages,
        }  # fmt: skip

    export = {"export": {"opset": 17, "exact_match_rows": len(test)}}
    student_recipe = recipe(
        "best-student", spec(sizes(args.student), tokenizer), str(folder / "best_student.pt"),
        [{"prune": {"target_macs": 0.5, "steps": 2}},
         {"qat": {"profile": "ort-x86", "calibration_batches": 8}, "recover": {"epochs": args.compress_epochs, "lr": 2e-4}}, export],
    )  # fmt: skip
    teacher_recipe = recipe("teacher", spec(sizes(args.teacher), tokenizer), teacher["weights"], [{"export": {"opset": 17, "exact_match_rows": 1}}])
    started = time.perf_counter()
    report = edgekd.compress(student_recipe, quiet=True).to_json()
    minutes = (time.perf_counter() - started) / 60
    teacher_report = edgekd.compress(teacher_recipe, quiet=True).to_json()
    files = report["student"]["onnx"]

    def where(run: str, path: str) -> str:
        return str(Path(path) if Path(path).is_absolute() else folder / run / path)

    return {
        "method": best["key"], "fraction": best["fraction"], "seed": best["seed"], "torch_em": best["em"], "minutes": minutes,
        "recipe": student_recipe, "params": {"student": report["teacher"]["params"], "pruned": report["steps"][-1]["params"]},
        "macs": {"student": report["teacher"]["macs"], "pruned": report["steps"][-1]["macs"]},
        "onnx_em": {"fp32 (best student)": report["teacher"]["onnx"]["exact_match"], "int8 (pruned + QAT)": files["int8"]["exact_match"]},
        "onnx": {"teacher": where("teacher", teacher_report["teacher"]["onnx"]["path"]),
                 "best student fp32": where("best-student", report["teacher"]["onnx"]["path"]),
                 "student int8": where("best-student", files["int8"]["path"])},
        "parity": files["int8"]["parity"],
    }  # fmt: skip


def time_files(record: dict, workdir: Path) -> None:
    """Greedy generation in ONNX Runtime, every file side by side, the teacher first (run through cpujob timing)."""
    from edgekd.bench.generation import benchmark_generation
    from edgekd.bench.timing import TimingSettings

    started = time.perf_counter()
    measured = benchmark_generation(
        record["compress"]["onnx"], batch_sizes=(1, 8), prompt_length=record["question_tokens"], new_tokens=16, threads=2,
        memory=False, settings=TimingSettings(warmup_s=0.2, min_duration_s=0.5, target_rounds=5, min_rounds=5),
    ).to_json()
    record["generation"] = {"bench": measured, "date": stamp(), "load": os.getloadavg(), "seconds": time.perf_counter() - started}
    (workdir / "results.json").write_text(json.dumps(record, indent=2))


def table(results: dict, fractions, methods) -> str:
    header = "| method | " + " | ".join(f"{f * 100:g}%" for f in fractions) + " |"
    rows = [header, "|" + "---|" * (len(fractions) + 1)]
    for key in methods:
        cells = []
        for fraction in fractions:
            values = results[key][str(fraction)]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values) * 100:.1f} ± {spread * 100:.1f}")
        rows.append(f"| {METHODS[key][0]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(record: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fractions = record["fractions"]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for key in record["methods"]:
        values = [record["results"][key][str(f)] for f in fractions]
        means = [statistics.mean(v) * 100 for v in values]
        spreads = [(statistics.stdev(v) if len(v) > 1 else 0.0) * 100 for v in values]
        axes.errorbar([f * 100 for f in fractions], means, yerr=spreads, marker="o", capsize=3, label=METHODS[key][0])
    axes.axhline(record["teacher"]["test_em"] * 100, color="grey", linestyle="--", label="teacher (larger, chain of thought)")
    axes.axhline(record["floor"] * 100, color="black", linestyle=":", label="always the most frequent answer")
    axes.set_ylim(0, 100)
    axes.set_xscale("log", base=2)
    axes.set_xticks([f * 100 for f in fractions], [f"{f * 100:g}%" for f in fractions])
    axes.set_xlabel("training inputs used")
    axes.set_ylabel("test exact match of the label (%)")
    axes.set_title(f"Distilling step by step, synthetic word problems (numbers ≤ {record['args']['max_value']})")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def compress_text(record: dict) -> str:
    if "compress" not in record:
        return "Compression: not run (`--no-compress`)."
    c = record["compress"]
    em = c["onnx_em"]
    text = f"""Compression of the best student whose `predict:` target is the label alone ({METHODS[c['method']][0]},
{c['fraction'] * 100:g}% of the inputs, seed {c['seed']}; PyTorch exact match {percent(c['torch_em'])}) with `edgekd.compress`
(the recipe is in results.json; data: the label task, `predict: <question>` → label, the training inputs and the
test split): pruned to 50% of its MACs in two steps with forward-KL recovery from the unpruned student, int8 QAT
(ort-x86) with distillation, exported (opset 17); {c['minutes']:.1f} min. Parameters {c['params']['student']:,} →
{c['params']['pruned']:,}, MACs {c['macs']['student']:,} → {c['macs']['pruned']:,}. Exact match of the label, greedy
decoding in ONNX Runtime over all {record['sizes']['test']} test problems: best student fp32 **{percent(em['fp32 (best student)'])}**,
pruned int8 **{percent(em['int8 (pruned + QAT)'])}**."""
    if "generation" in record:
        g = record["generation"]
        speedups = {(s["model"], s["batch"]): s for s in g["bench"]["speedups"]}
        rows = ["| file | batch | tokens/s | × teacher (CI) |", "|---|---|---|---|"]
        for case in g["bench"]["cases"]:
            ratio = speedups.get((case["model"], case["batch"]))
            against = f"{ratio['median_ratio']:.2f}× ({ratio['ci_low']:.2f}–{ratio['ci_high']:.2f})" if ratio else "1.00×"
            rows.append(f"| {case['model']} | {case['batch']} | {case['tokens_per_s']:,.0f} | {against} |")
        load = ", ".join(f"{x:.2f}" for x in g["load"])
        text += f"""

Generation speed ({g['date']}, `cpujob timing`: no other job ran; load average at the end {load}): one
`benchmark_generation` call, teacher first; greedy decoding in ONNX Runtime, {record['question_tokens']}-token prompts
(a question's mean length), 16 new tokens, no KV cache, 2 threads; tokens/s = new tokens per second of the whole
generation (median), speedup = median ratio of interleaved blocks. To answer, the teacher writes a rationale and
the label ({record['answer_tokens']:.0f} tokens for a gold answer on average), the student the label alone.

""" + "\n".join(rows)
    return text


def commands(record: dict) -> str:
    run = "`PYTHONPATH=$PWD /work/bin/cpujob work python bench/step_by_step.py"
    argv = " ".join(record["argv"])
    if "--merge" not in record["argv"]:
        return f"{run} {argv}` ({record['total_seconds'] / 60:.1f} min)"
    jobs = " ".join(a for a in record["argv"] if a != "--merge")
    minutes = ", ".join(f"{m:.1f}" for m in record["grid_minutes"])
    return (f"the students of each seed as a job of its own, side by side ({run} {jobs} --only-seed K`, {minutes} min), "
            f"then {run} {argv}` (the merge, compression and this text: {record['total_seconds'] / 60:.1f} min)")


def write(record: dict, notes: str | None) -> None:
    drew = plot(record, ROOT / "step_by_step.png")
    args, t, s = record["args"], record["teacher"], record["teacher"]["summary"]
    n_train, parsed = record["sizes"]["train"], record["sizes"]["train"] - s["unparsed"]
    full = max(record["fractions"])
    cot = " (under before_label the student writes its rationale first, then the label)" if "before" in record["methods"] else ""
    label_full = statistics.mean(record["results"]["label"][str(full)])
    body = f"""Machine: {record['machine']}, through `cpujob work` (1 thread) on a **shared machine** (other helpers' jobs ran
beside it). Date: {record['date']}.

Commands: {commands(record)}; then `cpujob timing python bench/step_by_step.py --time` for the speed table. The
teacher was trained and wrote its rationales in a `--probe` run just before (the same settings; the workdir caches
both by them), {(t['train_seconds'] + t['generate_seconds']) / 60:.1f} min.

Task: **synthetic** SVAMP-like multi-step arithmetic word problems (`edgekd.data.wordproblems`, 40 templates
of 2–4 steps, the 5 held-out templates unused) with `max_value={args['max_value']}`: every number, drawn or
computed, lies in 2..{args['max_value']}. Why small numbers: nothing here is pretrained, and the first run of this
benchmark (answers up to 1000) showed that neither a 1.6M-parameter teacher nor the students learn multi-digit
arithmetic from a few thousand problems — every model sat at the constant-answer floor. With small numbers the
templates, steps and rationales are the same, and each `a op b = c` is one of a few hundred facts.
{record['sizes']['seed_set']} seed problems with gold rationales for the teacher, {n_train} training inputs, {record['sizes']['test']}
test problems (same templates, unseen questions). BPE tokenizer, {record['vocab']} tokens.

Teacher: `t5_s({args['teacher']})`, {t['params']:,} parameters, {args['teacher_epochs']} epochs on the seed set
({t['train_seconds'] / 60:.1f} min, final loss {t['final_loss']:.4f}) to answer `Q: <input>\\nA:` with ` <rationale> The answer is <label>.`; it then wrote
rationales for the {n_train} training inputs through `TeacherPrompting` + `teacher_rationales` (greedy, cached;
{t['generate_seconds'] / 60:.1f} min with the test split's answers). Test exact match **{percent(t['test_em'])}** ({t['test_unparsed']} outputs unparsed). On the
training inputs {s['unparsed']} outputs did not parse and {s['disagreeing']} of the {parsed} parsed labels disagree with the
ground truth (**{percent(s['disagreeing'] / max(1, parsed))}**, kept: their rationales still train step-by-step students).
Rationale quality: {percent(t['quality']['true_statements'])} of its `a op b = c` statements are true arithmetic;
{percent(t['quality']['same_plan'])} of its rationales follow the gold rationale's sequence of operations.

Students: `t5_s({args['student']})`, {record['student_params']:,} parameters, {args['student_steps']} AdamW steps each (batch
{args['batch_size']}, lr {args['lr']}, cosine) at every fraction, {args['seeds']} seeds (the seed draws the subset and the
initialisation). Step-by-step students use the teacher's rationales and the **{args['sbs_labels'].replace('_', ' ')}** labels.
Test exact match of the label (%, mean ± std over seeds), only the `predict:` task running{cot}:

{table(record['results'], record['fractions'], record['methods'])}

Floor: always answering the most frequent training answer ({record['floor_answer']}) scores **{percent(record['floor'])}**.
Label-only fine-tuning at {full * 100:g}%: {percent(label_full)}. Training minutes per method (all runs):
{", ".join(f"{METHODS[k][0]} {v / 60:.1f}" for k, v in record['seconds'].items())}.

{"![accuracy against data fraction](step_by_step.png)" if drew else "(matplotlib is not installed: no plot)"}

{compress_text(record)}
"""
    if notes:
        body += "\n" + Path(notes).read_text()
    replace_section(SECTION, body)
    print(f"wrote {ROOT / 'RESULTS.md'}")


def main() -> None:
    args = arguments()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.time or args.write:
        record = json.loads((workdir / "results.json").read_text())
        if args.time:
            time_files(record, workdir)
        write(record, args.notes)
        return
    begun = time.perf_counter()
    fractions = [float(f) for f in args.fractions.split(",")]
    methods = args.methods.split(",")
    splits = make_splits(seed=0, train=args.seed_set + args.train, test=args.test, unseen=0, max_value=args.max_value)
    everything = [as_example(p) for p in splits["train"]]
    seed_set, train, test = everything[: args.seed_set], everything[args.seed_set :], [as_example(p) for p in splits["test"]]
    prompting = TeacherPrompting(max_new_tokens=80)
    floor_answer, floor = constant_answer_floor(train, test)
    print(f"floor: always answering {floor_answer} scores {floor:.3f} on the test split", flush=True)
    tokenizer, tokens = build_tokens(seed_set, train, prompting, workdir)
    teacher = teacher_stage(args, seed_set, train, test, tokens, tokenizer, prompting, workdir)
    summary = teacher["summary"]
    print(
        f"teacher: {teacher['params']:,} parameters, {teacher.get('train_seconds', 0):.0f} s training (loss {teacher.get('final_loss')}), "
        f"{teacher.get('generate_seconds', 0):.0f} s writing {summary['generated']} rationales; test EM {teacher['test_em']:.3f} "
        f"({teacher['test_unparsed']} unparsed); train: unparsed {summary['unparsed']}/{len(train)}, disagreeing {summary['disagreeing']}; "
        f"{teacher['quality']}", flush=True,
    )
    teacher_by_input = {e.input: e for e in teacher["labelled"]}
    # A before_label student writes a rationale, the marker and the label: room for the longest gold one and more.
    answer_tokens = [len(tokens.encode(StepByStepConfig().answer_marker.join([e.rationale, e.label]))) for e in train]
    before_tokens = max(answer_tokens) + 8
    if args.probe:
        for key in methods:
            em, seconds, _, _ = student_run(args, key, train, teacher_by_input, test, tokens, tokenizer, 0, before_tokens)
            print(f"probe {METHODS[key][0]}: EM {em:.3f}, {seconds:.0f} s training", flush=True)
        return
    seeds = [args.only_seed] if args.only_seed is not None else list(range(args.seeds))
    if not args.merge:
        part = grid(args, seeds, fractions, methods, train, teacher_by_input, test, tokens, tokenizer, before_tokens, workdir)
        part["seconds_total"] = time.perf_counter() - begun
        (workdir / f"results-seeds-{'-'.join(map(str, seeds))}.json").write_text(json.dumps(part, indent=2))
        if args.only_seed is not None:
            return
        parts = [part]
    else:  # the per-seed jobs' results, run side by side with --only-seed
        parts = [json.loads((workdir / f"results-seeds-{seed}.json").read_text()) for seed in seeds]
    results = {key: {str(f): [v for p in parts for v in p["results"][key][str(f)]] for f in fractions} for key in methods}
    seconds = {key: sum(p["seconds"][key] for p in parts) for key in methods}
    best = max((p["best"] for p in parts), key=lambda b: b["em"])
    student = model(sizes(args.student), tokenizer, 0)
    student.load_state_dict(torch.load(best["weights"], weights_only=True))
    record = {
        "argv": sys.argv[1:], "machine": machine(), "date": stamp(), "args": vars(args), "fractions": fractions, "methods": methods,
        "sizes": {"seed_set": len(seed_set), "train": len(train), "test": len(test)}, "vocab": tokenizer.vocab_size,
        "floor": floor, "floor_answer": floor_answer, "results": results, "seconds": seconds,
        "grid_minutes": [p["seconds_total"] / 60 for p in parts],
        "student_params": sum(p.numel() for p in student.parameters()),
        "question_tokens": round(statistics.mean(len(tokens.encode("predict: " + e.input)) + 1 for e in test)),
        "teacher": {k: v for k, v in teacher.items() if k not in ("model", "labelled")}, "answer_tokens": statistics.mean(answer_tokens),
    }
    print(table(results, fractions, methods), flush=True)
    if not args.no_compress:
        best = {**best, "model": student}
        record["compress"] = compress_best(args, best, teacher, tokenizer, train, test, workdir)
        print(json.dumps({k: v for k, v in record["compress"].items() if k != "recipe"}, indent=1), flush=True)
    record["total_seconds"] = time.perf_counter() - begun
    (workdir / "results.json").write_text(json.dumps(record, indent=2))
    if not args.no_write:
        write(record, args.notes)


def grid(args, seeds, fractions, methods, train, teacher_by_input, test, tokens, tokenizer, before_tokens, workdir: Path) -> dict:
    """Every student of `seeds`; their exact matches, training seconds, and the best label-alone student
    (its weights saved in the workdir, with the labels it trained on)."""
    results = {key: {str(f): [] for f in fractions} for key in methods}
    seconds = {key: 0.0 for key in methods}
    best: dict = {"em": -1.0}
    for seed in seeds:
        for fraction in fractions:
            examples = subset(train, fraction, seed)
            for key in methods:
                started = time.perf_counter()
                em, took, student, data = student_run(args, key, examples, teacher_by_input, test, tokens, tokenizer, seed, before_tokens)
                results[key][str(fraction)].append(em)
                seconds[key] += took
                if key in LABEL_ALONE and student is not None and em > best["em"]:
                    weights = workdir / f"best-student-seed{seed}.pt"
                    torch.save(student.state_dict(), weights)
                    labels = {e.input: e.teacher_label if method_config(args, key).label_source == "teacher" else e.label for e in data}
                    best = {"em": em, "key": key, "fraction": fraction, "seed": seed, "weights": str(weights), "labels": labels}
                print(f"seed {seed} {fraction * 100:g}% {METHODS[key][0]}: EM {em:.3f} ({took:.0f} s training, "
                      f"{time.perf_counter() - started:.0f} s in all)", flush=True)  # fmt: skip
    return {"results": results, "seconds": seconds, "best": best}


if __name__ == "__main__":
    main()
