"""Token-level divergences against hand computations, and the top-k teacher cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd.distill.sequence import DIVERGENCES, token_divergence
from edgekd.distill.topk_cache import TopKCache, TopKCacheWriter, bytes_per_token, index_dtype
from edgekd.errors import InputError

# Two sequences of three positions over a vocabulary of four; the last position of row 1 is padding.
STUDENT = [[[1.5, -0.3, 0.2, 0.0], [0.1, 0.4, -2.0, 1.0], [0.3, 0.3, 0.0, -1.0]],
           [[-0.5, 2.0, 0.1, 0.1], [1.0, 0.0, 0.0, -0.7], [9.0, -9.0, 9.0, -9.0]]]  # fmt: skip
TEACHER = [[[2.0, 0.5, -1.0, 0.3], [-0.5, 1.2, 0.3, 0.0], [0.0, 1.0, 2.0, -0.5]],
           [[0.4, 1.1, -0.2, 0.6], [2.5, -1.0, 0.2, 0.0], [-9.0, 9.0, -9.0, 9.0]]]  # fmt: skip
MASK = [[True, True, True], [True, True, False]]


def softmax(z: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in z]
    return [e / sum(exps) for e in exps]


def hand_kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def hand_jsd(p_teacher: list[float], p_student: list[float], beta: float) -> float:
    mixture = [beta * t + (1 - beta) * s for t, s in zip(p_teacher, p_student)]
    return beta * hand_kl(p_teacher, mixture) + (1 - beta) * hand_kl(p_student, mixture)


def hand_loss(divergence: str, beta: float, temperature: float) -> float:
    """The masked mean over real tokens, times T², in plain Python floats."""
    values = []
    for s_row, t_row, m_row in zip(STUDENT, TEACHER, MASK):
        for s, t, real in zip(s_row, t_row, m_row):
            if not real:
                continue
            p_s, p_t = softmax(s, temperature), softmax(t, temperature)
            values.append({"forward_kl": hand_kl(p_t, p_s), "reverse_kl": hand_kl(p_s, p_t),
                           "jsd": hand_jsd(p_t, p_s, beta)}[divergence])  # fmt: skip
    return temperature**2 * sum(values) / len(values)


def loss(divergence: str, beta: float = 0.5, temperature: float = 1.0, student=STUDENT, teacher=TEACHER) -> float:
    s, t = torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64)
    return token_divergence(s, t, torch.tensor(MASK), divergence=divergence, beta=beta, temperature=temperature).item()


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature,beta", [(1.0, 0.5), (2.0, 0.3), (4.0, 0.9)])
def test_divergences_match_hand_computation(divergence, temperature, beta):
    assert loss(divergence, beta, temperature) == pytest.approx(hand_loss(divergence, beta, temperature), rel=1e-9)


def test_jsd_endpoints_are_the_two_kls_and_its_limits_approach_them():
    forward, reverse = loss("forward_kl"), loss("reverse_kl")
    assert forward != pytest.approx(reverse, rel=1e-3)  # the data tells the two apart
    assert loss("jsd", beta=0.0) == forward and loss("jsd", beta=1.0) == reverse
    # JSD_β = β·KL(T‖S) + O(β²) as β → 0, and (1-β)·KL(S‖T) + O((1-β)²) as β → 1.
    for small in (1e-3, 1e-5):
        assert loss("jsd", beta=small) / small == pytest.approx(forward, rel=10 * small)
        assert loss("jsd", beta=1 - small) / small == pytest.approx(reverse, rel=10 * small)


def test_jsd_is_symmetric_at_half_and_only_there():
    assert loss("jsd", 0.5, student=STUDENT, teacher=TEACHER) == pytest.approx(loss("jsd", 0.5, student=TEACHER, teacher=STUDENT), rel=1e-12)
    assert loss("jsd", 0.2, student=STUDENT, teacher=TEACHER) != pytest.approx(loss("jsd", 0.2, student=TEACHER, teacher=STUDENT), rel=1e-3)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_padding_is_ignored_and_only_the_student_gets_gradients(divergence):
    student = torch.tensor(STUDENT, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    value = token_divergence(student, teacher, torch.tensor(MASK), divergence=divergence)
    value.backward()
    assert teacher.grad is None
    assert student.grad[1, 2].abs().sum() == 0 and student.grad[0].abs().sum() > 0
    moved = torch.tensor(STUDENT)
    moved[1, 2] = torch.tensor([-5.0, 5.0, 0.0, 3.0])  # change only the padded position
    assert token_divergence(moved, torch.tensor(TEACHER), torch.tensor(MASK), divergence=divergence).item() == pytest.approx(value.item())


def test_teacher_zeros_give_finite_losses_and_gradients_where_the_divergence_is_finite():
    teacher = torch.log(torch.tensor([[0.7, 0.3, 0.0, 0.0]]))  # a cache with k = 2 and no tail left
    student = torch.tensor([[0.2, -0.1, 0.4, 0.0]], requires_grad=True)
    for divergence in ("forward_kl", "jsd"):
        value = token_divergence(student, teacher, divergence=divergence)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(student.grad).all()
        student.grad = None
    assert token_divergence(student, teacher, divergence="reverse_kl").item() == math.inf  # mass where p_T = 0


def test_bad_settings_are_input_errors():
    s = torch.zeros(1, 4)
    with pytest.raises(InputError, match="unknown divergence"):
        token_divergence(s, s, divergence="kl")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="beta"):
        token_divergence(s, s, divergence="jsd", beta=1.5)
    with pytest.raises(InputError, match="differ in shape"):
        token_divergence(s, torch.zeros(1, 5))


# ---- top-k cache --------------------------------------------------------------------------------

def write_cache(folder, logits, masks, k):
    with TopKCacheWriter(folder, k=k, vocab_size=logits[0].shape[-1]) as writer:
        for batch, mask in zip(logits, masks):
            writer.add(batch, mask)
    return TopKCache.open(folder)


def ragged_batches(vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = [3 * torch.randn(3, 7, vocab, generator=generator), 3 * torch.randn(2, 5, vocab, generator=generator)]
    masks = [torch.rand(3, 7, generator=generator) > 0.3, torch.rand(2, 5, generator=generator) > 0.3]
    return logits, masks


def test_topk_cache_round_trips(tmp_path):
    logits, masks = ragged_batches(vocab=50)
    cache = write_cache(tmp_path / "cache", logits, masks, k=8)
    assert len(cache) == 5 and cache.info.tokens == sum(int(m.sum()) for m in masks)
    assert isinstance(cache.values, np.memmap) and cache.indices.dtype == np.uint16
    expected = [row for batch, mask in zip(logits, masks) for row in F.log_softmax(batch, -1).unbind(0)]
    row_masks = [row for mask in masks for row in mask.unbind(0)]
    for index, (log_probs, mask) in enumerate(zip(expected, row_masks)):
        values, indices, tail = cache.sequence(index)
        top = log_probs[mask].topk(8, dim=-1)
        assert np.array_equal(indices.astype(np.int64), top.indices.numpy())
        assert np.array_equal(values, top.values.numpy().astype(np.float16))  # exactly the fp16 rounding
        rest = log_probs[mask].scatter(-1, top.indices, float("-inf")).logsumexp(-1)
        assert np.array_equal(tail, rest.numpy().astype(np.float16))


def test_topk_reconstruction_is_a_distribution_faithful_on_the_top_k(tmp_path):
    logits, masks = ragged_batches(vocab=50)
    cache = write_cache(tmp_path / "cache", logits, masks, k=8)
    rebuilt = cache.log_probs([3, 4], masks[1])
    teacher = F.log_softmax(logits[1], -1)
    assert rebuilt.shape == teacher.shape
    assert torch.allclose(rebuilt.exp().sum(-1), torch.ones(2, 5), atol=1e-5)
    real = rebuilt[masks[1]]
    top = teacher[masks[1]].topk(8, dim=-1)
    assert torch.allclose(real.gather(-1, top.indices).exp(), top.values.exp(), rtol=3e-3, atol=1e-6)
    tail = real.scatter(-1, top.indices, float("nan"))
    flat = tail[~tail.isnan()].reshape(len(real), -1)
    assert torch.allclose(flat, flat[:, :1].expand_as(flat))  # the tail is spread evenly
    # Full k: the reconstruction is the teacher (to fp16), and the loss from the cache matches the live one.
    full = write_cache(tmp_path / "full", logits, masks, k=50).log_probs([3, 4], masks[1])
    student = torch.randn(2, 5, 50)
    for divergence in DIVERGENCES:
        live = token_divergence(student, logits[1], masks[1], divergence=divergence, temperature=2.0)
        cached = token_divergence(student, full, masks[1], divergence=divergence, temperature=2.0)
        assert cached.item() == pytest.approx(live.item(), rel=2e-3)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_a_student_shaped_tail_makes_every_divergence_one_over_the_top_k_and_the_rest(tmp_path, divergence):
    logits, masks = ragged_batches(vocab=50)
    cache = write_cache(tmp_path / "cache", logits, masks, k=8)
    student = torch.randn(2, 5, 50, generator=torch.Generator().manual_seed(0)).requires_grad_()
    rebuilt = cache.log_probs([3, 4], masks[1], tail_like=student)
    real = masks[1]
    teacher = F.log_softmax(logits[1][real], -1)
    top = teacher.topk(8, dim=-1).indices  # the stored ones (a student-shaped tail token may outrank them)

    def buckets(log_p: torch.Tensor) -> torch.Tensor:  # the top k, then "the rest", as log-probabilities
        kept = log_p.gather(-1, top)
        return torch.cat([kept, torch.log1p(-kept.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))], -1)

    by_hand = token_divergence(buckets(F.log_softmax(student[real], -1)), buckets(teacher), divergence=divergence)
    from_cache = token_divergence(student[real], rebuilt[real], divergence=divergence)
    assert from_cache.item() == pytest.approx(by_hand.item(), rel=5e-3)
    from_cache.backward()  # the student gets gradients through its logits, not through the reconstruction
    assert student.grad is not None and torch.isfinite(student.grad).all()
    shape = (rebuilt[real] - F.log_softmax(student[real].detach(), -1)).scatter(-1, top, float("nan"))
    ratio = shape[~shape.isnan()].reshape(len(top), -1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)  # tail ∝ the student's tail


def test_topk_cache_size_per_token(tmp_path):
    assert bytes_per_token(k=16, vocab_size=32_000) == 16 * 4 + 2
    assert index_dtype(70_000) == np.int32 and bytes_per_token(k=16, vocab_size=70_000) == 16 * 6 + 2
    logits, masks = ragged_batches(vocab=50)
    cache = write_cache(tmp_path / "cache", logits, masks, k=8)
    payload = cache.info.tokens * bytes_per_token(8, 50)
    overhead = (len(cache) + 1) * 8 + (tmp_path / "cache" / "meta.json").stat().st_size
    assert cache.bytes_per_token() * cache.info.tokens == payload + overhead


def test_topk_cache_refuses_a_different_mask_and_leaves_nothing_on_failure(tmp_path):
    logits, masks = ragged_batches(vocab=50)
    cache = write_cache(tmp_path / "cache", logits, masks, k=4)
    with pytest.raises(InputError, match="stored tokens"):
        cache.log_probs([0, 1, 2], torch.ones(3, 7, dtype=torch.bool))
    with pytest.raises(RuntimeError):
        with TopKCacheWriter(tmp_path / "broken", k=4, vocab_size=50) as writer:
            writer.add(logits[0], masks[0])
            raise RuntimeError("teacher crashed")
    assert not any(p.name.startswith("broken") for p in tmp_path.iterdir())
    with pytest.raises(InputError, match="not a top-k teacher cache"):
        TopKCache.open(tmp_path)
