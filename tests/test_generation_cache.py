"""The teacher generation cache: batched, keyed, resumable after a kill; and a tiny end-to-end run from
generated word problems through a tiny teacher's rationales to a step-by-step student."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgekd.data.rationales import RationaleExample, exact_match, normalize_label, read_rationale_jsonl, write_jsonl
from edgekd.data.wordproblems import make_splits
from edgekd.distill.generation_cache import cached_generate, module_digest, teacher_rationales
from edgekd.distill.prompting import TeacherPrompting
from edgekd.distill.stepbystep import (
    StepByStepConfig, encode_examples, hf_generate_fn, predict_labels, step_by_step_loss, training_pairs,
)
from edgekd.errors import InputError
from tests.stepbystep_support import CHARS, cache_prompts, forward_of, tiny_gpt2, train_pairs

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parent.parent


class Counting:
    """A real generate callable that records which prompts it was asked for."""

    def __init__(self, generate):
        self.generate, self.prompts = generate, []

    def __call__(self, prompts):
        self.prompts.extend(prompts)
        return self.generate(prompts)


def shard_files(folder):
    return sorted(p.name for p in Path(folder).glob("items-*.jsonl"))


def test_a_second_run_reuses_every_item_and_items_are_batched_on_a_fixed_grid(tmp_path):
    generate = Counting(hf_generate_fn(tiny_gpt2(), CHARS, "decoder", max_new_tokens=8))
    prompts = cache_prompts(10)
    first, counts = cached_generate(generate, prompts, tmp_path / "c", batch_size=4)
    assert counts == {"generated": 10, "reused": 0} and generate.prompts == prompts
    assert shard_files(tmp_path / "c") == ["items-0000000-0000003.jsonl", "items-0000004-0000007.jsonl", "items-0000008-0000009.jsonl"]
    assert all(isinstance(o, str) and o for o in first)
    again, counts = cached_generate(generate, prompts, tmp_path / "c", batch_size=4)
    assert (again, counts, len(generate.prompts)) == (first, {"generated": 0, "reused": 10}, 10)


def test_sampling_is_seeded_per_batch_and_leaves_the_global_generator_alone():
    model, prompts = tiny_gpt2(), cache_prompts(3)
    state = torch.random.get_rng_state()
    first = hf_generate_fn(model, CHARS, "decoder", max_new_tokens=8, temperature=1.0, seed=4)(prompts)
    assert torch.equal(state, torch.random.get_rng_state())
    # A resumed run generates the same grid batches, so it samples the same text too.
    assert hf_generate_fn(model, CHARS, "decoder", max_new_tokens=8, temperature=1.0, seed=4)(prompts) == first
    assert hf_generate_fn(model, CHARS, "decoder", max_new_tokens=8, temperature=1.0, seed=5)(prompts) != first


def test_generate_must_return_one_string_per_prompt(tmp_path):
    with pytest.raises(InputError, match="the teacher's generate returned 1 outputs for 2 prompts"):
        cached_generate(lambda prompts: ["only one"], ["a", "b"], tmp_path, batch_size=2)
    assert shard_files(tmp_path) == []


def test_a_folder_answers_one_set_of_prompts(tmp_path):
    cached_generate(lambda prompts: [p.upper() for p in prompts], ["a", "b"], tmp_path)
    with pytest.raises(InputError, match=r"holds outputs for 2 other prompts"):
        cached_generate(lambda prompts: prompts, ["a", "c"], tmp_path)


def test_a_damaged_cache_file_is_an_input_error_naming_it(tmp_path):
    (tmp_path / "items-0000000-0000001.jsonl").write_text('{"index": 0, "output": "x"}\n{"index": 7, "output": "y"}\n')
    with pytest.raises(InputError, match=r"items-0000000-0000001\.jsonl' line 2 is damaged .*delete that file"):
        cached_generate(lambda prompts: prompts, ["a", "b"], tmp_path)


def wait_for(condition, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_run_killed_mid_generation_resumes_with_exactly_the_uninterrupted_result(tmp_path):
    cache, reference_cache = tmp_path / "killed", tmp_path / "reference"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.stepbystep_support", str(cache), "2"], cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        # The child blocks inside its third generate call; two batches are on disk when it dies.
        wait_for(lambda: len(shard_files(cache)) == 2 or child.poll() is not None, "two flushed batches")
        assert child.poll() is None, child.stderr.read().decode()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    # What a kill inside a write leaves behind: a temporary file of a dead process. It must not count.
    (cache / f".items-0000008-0000011.jsonl.{child.pid}.tmp").write_text('{"index": 8, "output": "half')

    prompts = cache_prompts(20)
    resumed = Counting(hf_generate_fn(tiny_gpt2(), CHARS, "decoder", max_new_tokens=12))
    outputs, counts = cached_generate(resumed, prompts, cache, batch_size=4)
    assert counts == {"generated": 12, "reused": 8}
    assert resumed.prompts == prompts[8:]  # finished items are never generated again
    assert not list(cache.glob(".*.tmp"))

    uninterrupted, _ = cached_generate(hf_generate_fn(tiny_gpt2(), CHARS, "decoder", max_new_tokens=12), prompts, reference_cache, batch_size=4)
    assert outputs == uninterrupted


def test_the_cache_key_follows_teacher_weights_prompting_and_data_but_not_the_parse_pattern(tmp_path):
    teacher = tiny_gpt2()
    examples = [RationaleExample(f"what is {i} plus 1?", str(i + 1)) for i in range(4)]
    prompting = TeacherPrompting(max_new_tokens=6)

    def run(model=teacher, data=examples, prompts=prompting):
        generate = Counting(hf_generate_fn(model, CHARS, "decoder", max_new_tokens=prompts.max_new_tokens))
        _, summary = teacher_rationales(generate, data, prompts, tmp_path, module_digest(model), batch_size=2)
        return summary["cache"], len(generate.prompts)

    folder, generated = run()
    assert generated == 4 and json.loads((Path(folder) / "key.json").read_text())["count"] == 4
    assert run() == (folder, 0)
    reparsed = TeacherPrompting(max_new_tokens=6, parse=r"(?s)(?P<rationale>.+)is (?P<label>\d+)", keep_disagreeing=False)
    assert run(prompts=reparsed) == (folder, 0)
    changed = tiny_gpt2()
    with torch.no_grad():
        next(changed.parameters())[0, 0] += 1.0
    others = [run(model=changed), run(data=examples[:3]), run(prompts=TeacherPrompting(max_new_tokens=7))]
    assert [generated for _, generated in others] == [4, 3, 4]
    assert len({folder, *(f for f, _ in others)}) == 4


def test_tiny_end_to_end_a_tiny_teacher_writes_rationales_for_generated_word_problems(tmp_path):
    # A tiny teacher learns the answer format from a seed set with rationales, then answers the training inputs.
    # It is far too small to be right: its outputs are real teacher errors, to be counted, not fixed.
    splits = make_splits(seed=0, train=40, test=0, unseen=0)
    seed_set = read_rationale_jsonl(write_jsonl(tmp_path / "seed.jsonl", [p.record() for p in splits["train"][:24]]))
    prompting = TeacherPrompting(max_new_tokens=60)
    teacher = tiny_gpt2(seed=2)
    answers = [(prompting.prompt(e.input), prompting.answer.format(rationale=e.rationale, label=e.label), "label") for e in seed_set]
    train_pairs(teacher, "decoder", answers, steps=40, lr=1e-2, batch_size=8)
    inputs = read_rationale_jsonl(write_jsonl(tmp_path / "train.jsonl", [
        {"input": p.question, "label": str(p.answer)} for p in splits["train"][24:]]), required=("input", "label"))
    generate = Counting(hf_generate_fn(teacher, CHARS, "decoder", max_new_tokens=prompting.max_new_tokens))
    digest = module_digest(teacher)
    kept, summary = teacher_rationales(generate, inputs, prompting, tmp_path / "cache", digest, batch_size=8)
    assert (summary["generated"], summary["reused"], len(generate.prompts)) == (16, 0, 16)
    assert generate.prompts[0] == prompting.prompt(inputs[0].input) and generate.prompts[0].startswith("Q: ")
    assert summary["unparsed"] + summary["kept"] + summary["dropped"] == 16 and summary["kept"] == len(kept)
    assert len(summary["unparsed_examples"]) == min(3, summary["unparsed"])
    outputs = [json.loads(line)["output"] for f in sorted(Path(summary["cache"]).glob("items-*.jsonl")) for line in f.read_text().splitlines()]
    assert sum(prompting.parse_output(o) is None for o in outputs) == summary["unparsed"]
    assert all(e.rationale and e.teacher_label for e in kept)
    # Dropping the disagreeing ones is a re-parse of the cached outputs: nothing is generated again.
    strict = TeacherPrompting(max_new_tokens=60, keep_disagreeing=False)
    strict_kept, again = teacher_rationales(generate, inputs, strict, tmp_path / "cache", digest, batch_size=8)
    assert (again["generated"], again["reused"], again["cache"], len(generate.prompts)) == (0, 16, summary["cache"], 16)
    assert again["dropped"] == again["disagreeing"] == summary["disagreeing"]
    assert all(normalize_label(e.teacher_label) == normalize_label(e.label) for e in strict_kept)


def test_tiny_end_to_end_a_student_learns_both_tasks_from_rationales_in_jsonl_and_answers_with_predict_only(tmp_path):
    splits = make_splits(seed=1, train=24, test=6, unseen=0)
    train = read_rationale_jsonl(write_jsonl(tmp_path / "train.jsonl", [p.record() for p in splits["train"]]))
    config = StepByStepConfig(rationale_position="separate")
    student = tiny_gpt2(seed=3)
    batches = encode_examples(train, config, CHARS, "decoder")
    before = step_by_step_loss(forward_of(student, "decoder"), batches, config.alpha).item()
    label, rationale = training_pairs(train, config)
    train_pairs(student, "decoder", label + rationale, steps=30, lr=1e-2, batch_size=8)
    with torch.no_grad():
        after = step_by_step_loss(forward_of(student, "decoder"), batches, config.alpha).item()
    assert after < before - 1.0, (before, after)
    generate = Counting(hf_generate_fn(student, CHARS, "decoder", max_new_tokens=6))
    tests = splits["test"]
    predictions = predict_labels(generate, [p.question for p in tests], config)
    assert generate.prompts == [f"predict: {p.question}" for p in tests] and len(predictions) == len(tests)
    assert 0.0 <= exact_match(predictions, [str(p.answer) for p in tests]) <= 1.0
