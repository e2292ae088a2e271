"""The teacher's top-k token cache in recovery: built once per teacher and data, read by every
recovery phase instead of the teacher (causal and seq2seq), reused on resume, rebuilt when damaged,
and every soft-target setting (divergence, temperature, kd_on) served from its reconstruction."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from edgekd.distill.cache import AUTO_TOKEN_TOP_K, TokenSoftLabels, token_top_k
from edgekd.distill.losses import kd_loss, soft_weights
from edgekd.distill.sequence import DIVERGENCES
from edgekd.distill.topk_cache import TopKCache, TopKCacheWriter, bytes_per_token
from edgekd.errors import InputError
from edgekd.outputs import logits_of, run_model
from edgekd.recipe import Recipe
from edgekd.run import Run

from tests.test_run_generate import generate_recipe

LAYOUTS = {"causal": "gpt_s(dim=32, depth=2, heads=4, mlp_ratio=2)", "seq2seq": "t5_s(dim=32, depth=2, heads=4, mlp_ratio=2)"}


class CountingRun(Run):
    """A run that counts the teacher's forward passes inside recovery phases, apart from the ones
    that build its token cache."""

    def _recover_and_measure(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.teacher_calls = getattr(self, "teacher_calls", 0)
        handle = self.teacher.register_forward_hook(lambda *_: setattr(self, "teacher_calls", self.teacher_calls + 1))
        try:
            return super()._recover_and_measure(*args, **kwargs)
        finally:
            handle.remove()

    def _build_token_cache(self, *args: Any, **kwargs: Any) -> TopKCache:
        before = getattr(self, "teacher_calls", 0)
        cache = super()._build_token_cache(*args, **kwargs)
        self.teacher_calls = before  # building is not a recovery phase running the teacher
        return cache


def layout_recipe(tmp_path: Path, layout: str, **runtime: Any) -> dict[str, Any]:
    recipe = generate_recipe(tmp_path, model=LAYOUTS[layout], stages=[{"prune": {"target_macs": 0.6, "steps": 1}}, {"distill": {"epochs": 1}}])
    recipe["data"]["options"]["layout"] = layout
    recipe["distill"] |= {"kd_on": "confidence", "temperature": 2.0}
    recipe["runtime"] = runtime
    return recipe


def run(recipe: dict[str, Any], resume: bool = False) -> tuple[dict[str, Any], int, str]:
    console = Console(file=io.StringIO(), width=300)
    job = CountingRun(Recipe.model_validate(recipe), console=console)
    report = job.execute(resume=resume).to_json()
    return report, job.teacher_calls, console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_recovery_reads_the_token_cache_and_matches_the_live_teacher(tmp_path, layout):
    live, live_calls, _ = run(layout_recipe(tmp_path, layout, teacher_cache=False))
    assert live_calls > 0 and "teacher_cache" not in live
    vocab = live["dataset"]["vocab_size"]
    recipe = layout_recipe(tmp_path, layout, teacher_cache_top_k=vocab)  # k = vocab: exact up to fp16 rounding
    cached, calls, said = run(recipe)
    assert calls == 0  # two recovery phases, the teacher never ran in them
    assert said.count("bytes/token; recovery reads it, not the teacher") == 1  # built once, read by both phases
    cache = cached["teacher_cache"]
    assert cache["k"] == vocab and cache["tokens"] > cached["dataset"]["sizes"]["train"] and cache["folder"].startswith("teacher-topk-")
    assert cache["bytes_per_token"] == pytest.approx(cache["bytes"] / cache["tokens"], rel=0.01)
    assert json.loads((tmp_path / "run" / "report.json").read_text())["teacher_cache"]["bytes_per_token"] == cache["bytes_per_token"]
    for on, off in zip(cached["steps"], live["steps"]):
        assert on["accuracy"] == pytest.approx(off["accuracy"], abs=0.02)
        assert on["perplexity"] == pytest.approx(off["perplexity"], rel=0.02)
    assert "bytes/token" in (tmp_path / "run" / "report.md").read_text()

    # What the phases read is the teacher's distribution at each real target token.
    job = Run(Recipe.model_validate(recipe), quiet=True)
    job.prepare()
    x, y, index = next(iter(job.loader("train", indexed=True)))
    stored = job.token_soft_labels().logits(None, index, y)
    mask = y != -100
    with torch.no_grad():
        teacher = F.log_softmax(logits_of(run_model(job.teacher, job.teacher_view(x))), dim=-1)
    assert (stored[mask] - teacher[mask]).abs().max() < 0.02  # fp16 log-probabilities

    # A resumed run with one more stage reads the same folder; it builds nothing.
    folder = tmp_path / "run" / cache["folder"]
    written = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    recipe["stages"].append({"distill": {"epochs": 1}})
    resumed, calls, said = run(recipe, resume=True)
    assert calls == 0 and f"teacher cache {folder.name} (reused)" in said
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == written
    assert resumed["teacher_cache"]["folder"] == folder.name and len(resumed["steps"]) == 3


def test_a_damaged_token_cache_is_said_and_built_again(tmp_path):
    recipe = layout_recipe(tmp_path, "causal")
    first, _, said = run(recipe)
    assert f"top-{AUTO_TOKEN_TOP_K} of" in said and first["teacher_cache"]["k"] == AUTO_TOKEN_TOP_K
    folder = tmp_path / "run" / first["teacher_cache"]["folder"]
    values = folder / "values.bin"
    values.write_bytes(values.read_bytes()[:-10])  # cut short
    recipe["stages"].append({"distill": {"epochs": 1}})
    resumed, calls, said = run(recipe, resume=True)
    assert "values.bin should hold" in said and "building it again" in said and "(built in" in said
    assert calls == 0 and TopKCache.open(folder).info.tokens == first["teacher_cache"]["tokens"]


def write_cache(folder: Path, logits: torch.Tensor, mask: torch.Tensor, k: int) -> TopKCache:
    with TopKCacheWriter(folder, k=k, vocab_size=logits.shape[-1]) as writer:
        writer.add(logits, mask)
    return TopKCache.open(folder)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f: (f / "tail.bin").unlink(), "tail.bin should hold"),
        (lambda f: (f / "meta.json").write_text("{"), "meta.json cannot be read"),
        (lambda f: (f / "values.bin").write_bytes(b"\x00\x7e" * (len((f / "values.bin").read_bytes()) // 2)), "no log-probabilities"),
        (lambda f: (f / "indices.bin").write_bytes(b"\xff" * len((f / "indices.bin").read_bytes())), "beyond the vocabulary"),
        (lambda f: (f / "offsets.bin").write_bytes(bytes(len((f / "offsets.bin").read_bytes()))), "offsets.bin"),
    ],
)
def test_a_damaged_cache_folder_is_refused_saying_what_is_wrong(tmp_path, damage, problem):
    torch.manual_seed(0)
    write_cache(tmp_path / "cache", torch.randn(2, 5, 40), torch.ones(2, 5, dtype=torch.bool), k=4)
    damage(tmp_path / "cache")
    with pytest.raises(InputError, match=problem):
        TopKCache.open(tmp_path / "cache")


@pytest.mark.parametrize("kd_on", ["all", "teacher_correct", "confidence"])
def test_every_soft_target_setting_reads_the_cache_as_the_live_logits(tmp_path, kd_on):
    """k = vocab: the same loss as live logits for every divergence, temperature and kd_on (fp16 aside);
    k < vocab: teacher_correct and confidence come from the reconstruction (top-1 and the target's probability)."""
    torch.manual_seed(1)
    teacher, student = torch.randn(3, 6, 30) * 3, torch.randn(3, 6, 30)
    targets = torch.randint(0, 30, (3, 6)).masked_fill(torch.rand(3, 6) < 0.3, -100)
    targets[0, 0] = teacher[0, 0].argmax()  # the teacher is right here
    index = torch.arange(3)
    exact = TokenSoftLabels(write_cache(tmp_path / "full", teacher, targets != -100, k=30)).logits(None, index, targets)
    for divergence in DIVERGENCES:
        for temperature in (1.0, 3.0):
            alpha = 0.7 if kd_on == "all" else 0.7 * soft_weights(teacher, targets, kd_on)
            alpha_cached = 0.7 if kd_on == "all" else 0.7 * soft_weights(exact, targets, kd_on)
            live = kd_loss(student, teacher, targets, temperature, alpha, divergence, 0.3)
            assert float(kd_loss(student, exact, targets, temperature, alpha_cached, divergence, 0.3)) == pytest.approx(float(live), rel=2e-3)
    top = TokenSoftLabels(write_cache(tmp_path / "top", teacher, targets != -100, k=4)).logits(None, index, targets)
    mask = targets != -100
    if kd_on == "teacher_correct":
        assert torch.equal(soft_weights(top, targets, kd_on), soft_weights(teacher, targets, kd_on))
        assert soft_weights(top, targets, kd_on)[0] == 1
    elif kd_on == "confidence":
        reconstructed = top[mask].exp().gather(1, targets[mask][:, None]).squeeze(1)
        assert torch.allclose(soft_weights(top, targets, kd_on), reconstructed)
        in_top = (teacher[mask].topk(4, dim=-1).indices == targets[mask][:, None]).any(1)
        live = F.softmax(teacher[mask], dim=-1).gather(1, targets[mask][:, None]).squeeze(1)
        assert torch.allclose(reconstructed[in_top], live[in_top], rtol=2e-3)


def test_auto_keeps_32_tokens_and_never_more_than_the_vocabulary():
    assert token_top_k("auto", 50_000) == 32 and token_top_k("auto", 20) == 20 and token_top_k(100, 80) == 80
    assert bytes_per_token(token_top_k("auto", 50_000), 50_000) == 130  # DistillKit stores ~300
