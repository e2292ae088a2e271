"""Distilling step by step, the paper's comparison at small scale, offline (issue 18 item 3).

Task: SYNTHETIC multi-step arithmetic word problems (`edgekd.data.wordproblems`, SVAMP-like, 45
templates); the answer is a checkable integer.

1. A teacher (a larger `t5_s`) is fine-tuned on a small seed set of problems with gold rationales, in
   the answer format of a `TeacherPrompting` (" <rationale> The answer is <label>."). It is not told the
   answers of the training inputs: it then writes a rationale and a label for every one of them through
   `teacher_rationales` (batched, cached, parsed), so its rationales and labels carry its real errors.
2. Students, all the same small `t5_s`, train on 12.5/25/50/100% of the training inputs (the same
   subset for every method at a given fraction and seed), for the same number of optimizer steps:
   - label-only fine-tuning on the ground-truth labels;
   - standard distillation on the teacher's labels;
   - step-by-step, rationale `separate` (the paper: two tasks, α = 0.5);
   - step-by-step, rationale `after_label` (Wadhwa et al., 2024: one target, label first).
   Step-by-step uses the teacher's rationales with the labels of `--sbs-labels` (ground truth by
   default, the paper's comparison with fine-tuning).
3. Every student is scored by exact match of the label on a held-out test split (the `predict:` task
   alone, greedy); the teacher is scored on the same split.

    PYTHONPATH=$PWD /work/bin/cpujob work python bench/step_by_step.py            # the run; writes RESULTS.md
    PYTHONPATH=$PWD /work/bin/cpujob work python bench/step_by_step.py --probe    # time one student of each kind
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, replace_section, stamp  # noqa: E402

from edgekd.data.rationales import RationaleExample, exact_match  # noqa: E402
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
METHODS = {
    # name: (config, trains on rationales, needs the teacher's output)
    "label-only (ground truth)": (StepByStepConfig(label_source="ground_truth", rationale_position="after_label"), False),
    "standard distillation (teacher labels)": (StepByStepConfig(label_source="teacher", rationale_position="after_label"), False),
    "step-by-step, separate": (StepByStepConfig(rationale_position="separate"), True),
    "step-by-step, after_label": (StepByStepConfig(rationale_position="after_label"), True),
}
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-set", type=int, default=800, help="problems with gold rationales the teacher learns from")
    parser.add_argument("--train", type=int, default=2400, help="training inputs (the teacher labels them)")
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--teacher", default="dim=128,depth=3,heads=4")
    parser.add_argument("--student", default="dim=64,depth=2,heads=4")
    parser.add_argument("--teacher-epochs", type=int, default=36)
    parser.add_argument("--student-steps", type=int, default=400, help="optimizer steps of every student")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    parser.add_argument("--sbs-labels", choices=("ground_truth", "teacher"), default="ground_truth")
    parser.add_argument("--workdir", default="runs/step_by_step")
    parser.add_argument("--probe", action="store_true", help="time one student of each kind at 100%% and stop")
    parser.add_argument("--replot", action="store_true", help="redraw step_by_step.png from the workdir's results.json and stop")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    return parser.parse_args()


def sizes(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in text.split(","))}


def as_example(problem) -> RationaleExample:
    record = problem.record()
    return RationaleExample(record["input"], record["label"], record["rationale"])


def build_tokens(seed_set, train, prompting: TeacherPrompting):
    """BPE on what the models read and write: questions of seed and training sets, the seed answers."""
    texts = [e.input for e in seed_set + train] + [prompting.answer.format(rationale=e.rationale, label=e.label) for e in seed_set]
    texts += [c.explanation_marker + c.rationale_prefix + c.label_prefix for c, _ in METHODS.values()]
    tokenizer = train_tokenizer(texts, TokenizerTraining(kind="bpe", vocab_size=512))
    return tokenizer, text_tokens(tokenizer)


def model(shape: dict[str, int], vocab: int, seed: int):
    torch.manual_seed(seed)
    return t5_s(vocab_size=vocab, max_length=160, **shape)


def teacher_stage(args, seed_set, train, test, tokens, vocab, prompting) -> dict:
    started = time.perf_counter()
    teacher = model(sizes(args.teacher), vocab, seed=1000)
    losses = train_prompted_teacher(
        teacher, seed_set, prompting, tokens, "seq2seq", epochs=args.teacher_epochs, batch_size=args.batch_size, lr=args.lr,
    )
    trained = time.perf_counter() - started
    generate = greedy_generate_fn(teacher, tokens, "seq2seq", max_new_tokens=prompting.max_new_tokens)
    started = time.perf_counter()
    labelled, summary = teacher_rationales(
        generate, train, prompting, Path(args.workdir) / "generations", module_digest(teacher), batch_size=64,
    )
    generated = time.perf_counter() - started
    test_outputs, _ = teacher_rationales(
        generate, test, prompting, Path(args.workdir) / "generations", module_digest(teacher), batch_size=64,
    )
    parsed = {e.input: e.teacher_label for e in test_outputs}
    teacher_em = exact_match([parsed.get(e.input, "") for e in test], [e.label for e in test])
    return {
        "model": teacher, "labelled": labelled, "summary": summary, "test_em": teacher_em,
        "params": sum(p.numel() for p in teacher.parameters()), "train_seconds": trained, "generate_seconds": generated,
        "final_loss": losses[-1], "quality": rationale_quality(labelled, {e.input: e for e in train}),
    }


EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b if b else None}


def rationale_quality(written: list[RationaleExample], gold: dict[str, RationaleExample]) -> dict[str, float]:
    """How the teacher's rationales went wrong: the share of its `a op b = c` statements that are true
    arithmetic, and of rationales whose sequence of operations is the gold rationale's (the plan)."""
    statements = true = same_plan = 0
    for example in written:
        steps = EQUATION.findall(example.rationale or "")
        statements += len(steps)
        true += sum(OPERATIONS[op](int(a), int(b)) == int(c) for a, op, b, c in steps)
        same_plan += [op for _, op, _, _ in steps] == [op for _, op, _, _ in EQUATION.findall(gold[example.input].rationale or "")]
    return {"true_statements": true / max(1, statements), "same_plan": same_plan / max(1, len(written))}


def subset(examples: list[RationaleExample], fraction: float, seed: int) -> list[RationaleExample]:
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    return [examples[i] for i in sorted(order[: max(1, round(fraction * len(examples)))])]


def student_run(args, name, examples, teacher_by_input, test, tokens, vocab, seed) -> tuple[float, float]:
    config, rationales = METHODS[name]
    if name.startswith("step-by-step"):
        config = StepByStepConfig(**{**config.__dict__, "label_source": args.sbs_labels})
    uses_teacher = config.label_source == "teacher" or rationales
    data = [teacher_by_input[e.input] for e in examples if e.input in teacher_by_input] if uses_teacher else examples
    if not data:  # the teacher's outputs for these inputs all failed to parse: nothing to train on
        return 0.0, 0.0
    epochs = max(1, math.ceil(args.student_steps / math.ceil(len(data) / args.batch_size)))
    student = model(sizes(args.student), vocab, seed=seed)
    started = time.perf_counter()
    train_text_student(
        student, data, config, tokens, "seq2seq", rationales=rationales, epochs=epochs, batch_size=args.batch_size,
        lr=args.lr, seed=seed,
    )
    seconds = time.perf_counter() - started
    labels = [tokens.encode(e.label + (config.explanation_marker if config.rationale_position == "after_label" else "")) for e in test]
    em, _ = label_exact_match(student, test, config, tokens, "seq2seq", max_new_tokens=max(len(t) for t in labels) + 2)
    return em, seconds


def table(results: dict, fractions, label_only_full: float) -> str:
    header = "| method | " + " | ".join(f"{f * 100:g}%" for f in fractions) + " |"
    rows = [header, "|" + "---|" * (len(fractions) + 1)]
    for name in METHODS:
        cells = []
        for fraction in fractions:
            values = results[name][fraction]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values) * 100:.1f} ± {spread * 100:.1f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def constant_answer_floor(train: list[RationaleExample], test: list[RationaleExample]) -> float:
    """Exact match of always answering the most frequent training label: what a student scores that learned nothing else."""
    most_frequent = Counter(e.label for e in train).most_common(1)[0][0]
    return exact_match([most_frequent] * len(test), [e.label for e in test])


def plot(results: dict, fractions, teacher_em: float, floor: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    for name in METHODS:
        means = [statistics.mean(results[name][f]) * 100 for f in fractions]
        axes.plot([f * 100 for f in fractions], means, marker="o", label=name)
    axes.axhline(teacher_em * 100, color="grey", linestyle="--", label="teacher")
    axes.axhline(floor * 100, color="black", linestyle=":", label="always the most frequent answer")
    axes.set_ylim(bottom=0)
    axes.set_xscale("log", base=2)
    axes.set_xticks([f * 100 for f in fractions], [f"{f * 100:g}%" for f in fractions])
    axes.set_xlabel("training inputs used")
    axes.set_ylabel("test exact match of the label (%)")
    axes.set_title("Distilling step by step, synthetic word problems")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def main() -> None:
    args = arguments()
    begun = time.perf_counter()
    fractions = [float(f) for f in args.fractions.split(",")]
    splits = make_splits(seed=0, train=args.seed_set + args.train, test=args.test, unseen=0)
    everything = [as_example(p) for p in splits["train"]]
    seed_set, train, test = everything[: args.seed_set], everything[args.seed_set :], [as_example(p) for p in splits["test"]]
    prompting = TeacherPrompting(max_new_tokens=72)
    floor = constant_answer_floor(train, test)
    if args.replot:
        record = json.loads((Path(args.workdir) / "results.json").read_text())
        results = {n: {float(f): v for f, v in r.items()} for n, r in record["results"].items()}
        plot(results, fractions, record["teacher_em"], floor, ROOT / "step_by_step.png")
        return
    tokenizer, tokens = build_tokens(seed_set, train, prompting)
    vocab = tokenizer.vocab_size
    teacher = teacher_stage(args, seed_set, train, test, tokens, vocab, prompting)
    summary = teacher["summary"]
    print(
        f"teacher: {teacher['params']:,} parameters, {teacher['train_seconds']:.0f} s training (loss {teacher['final_loss']:.3f}), "
        f"{teacher['generate_seconds']:.0f} s writing {summary['generated']} rationales; test EM {teacher['test_em']:.3f}; "
        f"unparsed {summary['unparsed']}/{len(train)}, disagreeing {summary['disagreeing']}; {teacher['quality']}", flush=True,
    )
    teacher_by_input = {e.input: e for e in teacher["labelled"]}
    if args.probe:
        for name in METHODS:
            em, seconds = student_run(args, name, train, teacher_by_input, test, tokens, vocab, seed=0)
            print(f"probe {name}: EM {em:.3f}, {seconds:.0f} s training", flush=True)
        return
    results = {name: {f: [] for f in fractions} for name in METHODS}
    seconds = {name: 0.0 for name in METHODS}
    for seed in range(args.seeds):
        for fraction in fractions:
            examples = subset(train, fraction, seed)
            for name in METHODS:
                em, took = student_run(args, name, examples, teacher_by_input, test, tokens, vocab, seed)
                results[name][fraction].append(em)
                seconds[name] += took
                print(f"seed {seed} {fraction * 100:g}% {name}: EM {em:.3f} ({took:.0f} s)", flush=True)
    total = time.perf_counter() - begun
    label_only_full = statistics.mean(results["label-only (ground truth)"][max(fractions)])
    text = table(results, fractions, label_only_full)
    print(text)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    record = {
        "results": {n: {str(f): v for f, v in r.items()} for n, r in results.items()}, "teacher_em": teacher["test_em"],
        "teacher_summary": {k: v for k, v in summary.items() if k != "cache"}, "teacher_quality": teacher["quality"], "seconds": seconds, "total_seconds": total,
        "args": vars(args),
    }
    (Path(args.workdir) / "results.json").write_text(json.dumps(record, indent=2))
    if args.no_write:
        return
    drew = plot(results, fractions, teacher["test_em"], floor, ROOT / "step_by_step.png")
    student_params = sum(p.numel() for p in model(sizes(args.student), vocab, 0).parameters())
    body = f"""Machine: {machine()}, through `cpujob work` (1 thread) on a **shared machine** (other helpers' jobs ran
beside it). Date: {stamp()}. Whole run: {total / 60:.1f} min.

Command: `PYTHONPATH=$PWD /work/bin/cpujob work python bench/step_by_step.py {' '.join(sys.argv[1:])}`

Task: **synthetic** SVAMP-like multi-step arithmetic word problems (`edgekd.data.wordproblems`), {len(seed_set)}
seed problems with gold rationales for the teacher, {len(train)} training inputs, {len(test)} test problems
(same templates, unseen questions). BPE tokenizer, {vocab} tokens, trained on the questions and seed answers.

Teacher: `t5_s({args.teacher})`, {teacher['params']:,} parameters, fine-tuned {args.teacher_epochs} epochs on the
seed set to answer `Q: <input>\\nA:` with ` <rationale> The answer is <label>.`; it then wrote rationales for the
{len(train)} training inputs through `TeacherPrompting` + `teacher_rationales` (greedy, cached). Test exact match
**{teacher['test_em'] * 100:.1f}%**; on the training inputs {summary['unparsed']} outputs did not parse and
{summary['disagreeing']} of the {len(train) - summary['unparsed']} parsed labels disagree with the ground truth
(**{summary['disagreeing'] / max(1, len(train) - summary['unparsed']) * 100:.1f}%**, kept: their rationales still train
step-by-step students). Of the `a op b = c` statements in its rationales
{teacher['quality']['true_statements'] * 100:.1f}% are true arithmetic; {teacher['quality']['same_plan'] * 100:.1f}% of its
rationales follow the gold rationale's sequence of operations.

Students: `t5_s({args.student})`, {student_params:,} parameters, {args.student_steps} AdamW steps each (batch
{args.batch_size}, lr {args.lr}, cosine) at every fraction, {args.seeds} seeds (the seed draws the subset and the
initialisation). Step-by-step students use the teacher's rationales and the **{args.sbs_labels.replace('_', ' ')}**
labels. Test exact match of the label (%, mean ± std over seeds), only the `predict:` task running:

{text}

{"![accuracy against data fraction](step_by_step.png)" if drew else "(matplotlib is not installed: no plot)"}

Label-only fine-tuning at 100%: {label_only_full * 100:.1f}%. Always answering the most frequent training label
scores {floor * 100:.1f}%. Training seconds per method (all runs):
{", ".join(f"{n} {s:.0f}" for n, s in seconds.items())}.
"""
    replace_section("Distilling step by step on synthetic word problems (issue 18)", body)
    print(f"wrote {ROOT / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
