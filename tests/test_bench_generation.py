"""Generation benchmark primitives, checked for structure (never for timing)."""

from __future__ import annotations

import json

import pytest

from edgekd.bench.generation import benchmark_generation, memory_probe, render_generation
from edgekd.bench.timing import TimingSettings
from edgekd.errors import InputError
from edgekd.export.transformer import SpecialTokens, export_sequence_model
from tests.hf_tiny import EOS, PAD, START, bert_classifier, gpt2_lm, t5_seq2seq

QUICK = TimingSettings(warmup_s=0.0, min_iterations=2, min_duration_s=0.0, target_rounds=2, min_rounds=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generation")
    teacher, student = folder / "teacher.onnx", folder / "student.onnx"
    export_sequence_model(gpt2_lm(hidden=64, layers=3), teacher, "decoder", tokens=SpecialTokens(PAD, EOS))
    export_sequence_model(gpt2_lm(hidden=32), student, "decoder", tokens=SpecialTokens(PAD, EOS))
    seq2seq = folder / "t5.onnx"
    export_sequence_model(t5_seq2seq(), seq2seq, "seq2seq", tokens=SpecialTokens(PAD, EOS, START))
    return {"teacher": teacher, "student": student, "seq2seq": seq2seq, "folder": folder}


def test_teacher_and_student_side_by_side_at_two_batch_sizes(files):
    result = benchmark_generation(
        {"teacher": files["teacher"], "student": files["student"]}, batch_sizes=(1, 3), prompt_length=5, new_tokens=4,
        settings=QUICK, memory=False,
    )  # fmt: skip
    assert [(c.model, c.batch) for c in result.cases] == [("teacher", 1), ("student", 1), ("teacher", 3), ("student", 3)]
    assert set(result.speedups) == {("student", 1), ("student", 3)} and result.reference == "teacher"
    for case in result.cases:
        assert case.first_token_ms.n == case.generation_ms.n >= QUICK.min_iterations
        assert case.tokens_per_s == pytest.approx(case.batch * 4 / (case.generation_ms.median / 1000))
        assert case.memory is None
    ratio = result.speedups[("student", 3)]
    assert ratio.ci_low <= ratio.median_ratio <= ratio.ci_high
    data = json.loads(json.dumps(result.to_json()))
    assert data["schema"] == "edgekd.bench.generation/1" and len(data["cases"]) == 4
    table = render_generation(result)
    assert table.count("\n") == 1 + 4 and "speedup vs teacher" in table


def test_seq2seq_files_generate_and_memory_is_probed_without_torch(files):
    result = benchmark_generation([files["seq2seq"]], batch_sizes=(2,), prompt_length=4, new_tokens=3, settings=QUICK, memory=True)
    (case,) = result.cases
    assert case.model == "t5" and not result.speedups
    assert case.memory["peak_over_baseline_mb"] > 0 and case.memory["peak_rss_mb"] >= case.memory["loaded_rss_mb"] > 0
    assert case.memory["torch_imported"] is False  # the probe measures the runtime, not edgekd's training stack


def test_bad_requests_are_input_errors(files):
    export_sequence_model(bert_classifier(), files["folder"] / "bert.onnx", "encoder")
    with pytest.raises(InputError, match="only those generate"):
        benchmark_generation([files["folder"] / "bert.onnx"], settings=QUICK, memory=False)
    with pytest.raises(InputError, match="must be ≥ 1"):
        benchmark_generation([files["teacher"]], batch_sizes=(0,), settings=QUICK, memory=False)
    with pytest.raises(InputError):
        benchmark_generation([files["folder"] / "missing.onnx"], settings=QUICK, memory=False)
    with pytest.raises(InputError, match="missing.onnx"):  # the fresh process's InputError, re-raised here
        memory_probe(files["folder"] / "missing.onnx", 1, 4, 2, None)
