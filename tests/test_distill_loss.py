import math

import pytest
import torch
import torch.nn.functional as F

from edgekd.data import load_data
from edgekd.distill import DistillConfig, Objective, Phase, fit, kd_loss
from edgekd.models import build_model


def hand_kd(student, teacher, target, temperature, alpha):
    """The loss written out with plain Python floats for one sample."""
    def softmax(z):
        exps = [math.exp(v) for v in z]
        return [e / sum(exps) for e in exps]

    q = softmax(student)
    ce = -math.log(q[target])
    p_s = softmax([v / temperature for v in student])
    p_t = softmax([v / temperature for v in teacher])
    kl = sum(t * math.log(t / s) for t, s in zip(p_t, p_s))
    return (1 - alpha) * ce + alpha * temperature**2 * kl


@pytest.mark.parametrize("temperature,alpha", [(4.0, 0.9), (1.0, 0.5), (2.0, 1.0), (8.0, 0.0)])
def test_kd_loss_matches_hand_computation(temperature, alpha):
    student = [[1.5, -0.3, 0.2], [0.1, 0.4, -2.0]]
    teacher = [[2.0, 0.5, -1.0], [-0.5, 1.2, 0.3]]
    targets = [0, 1]
    expected = sum(hand_kd(s, t, y, temperature, alpha) for s, t, y in zip(student, teacher, targets)) / 2
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), temperature, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_temperature_squared_factor_scales_the_soft_term():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    soft = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean")
    assert kd_loss(s, t, y, 3.0, 1.0).item() == pytest.approx(9 * soft.item(), rel=1e-5)


def test_alpha_zero_is_cross_entropy():
    torch.manual_seed(1)
    s, t, y = torch.randn(16, 5), torch.randn(16, 5), torch.randint(0, 5, (16,))
    assert kd_loss(s, t, y, 4.0, 0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-6)


def test_kd_method_never_sends_gradients_to_the_teacher():
    data = load_data("digits", seed=0)
    teacher = build_model("cnn(width=4)", in_channels=1, num_classes=10)
    student = build_model("cnn(width=4)", in_channels=1, num_classes=10)
    teacher.train()  # even a teacher left in train mode with grads enabled must not be touched
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = data.train.tensors[0][:32], data.train.tensors[1][:32]
    with Objective(Phase(DistillConfig(), student, teacher, torch.device("cpu")), x[:4]) as objective:
        loss = objective(x, y)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_distillation_teaches_a_student_on_real_digits():
    data = load_data("digits", seed=0)
    torch.manual_seed(0)
    teacher = build_model("cnn(width=8)", in_channels=1, num_classes=10)
    loader = data.loader("train", 64, shuffle=True, seed=0)
    cpu = torch.device("cpu")
    example = data.train.tensors[0][:4]
    ce = DistillConfig(method="ce", alpha=0, epochs=5, lr=0.05)
    fit(teacher, Objective(Phase(ce, teacher, None, cpu), example), loader, ce, device=cpu, description="t")
    student = build_model("cnn(width=6)", in_channels=1, num_classes=10)
    kd = DistillConfig(epochs=8, lr=0.05)
    losses = fit(student, Objective(Phase(kd, student, teacher.eval(), cpu), example), loader, kd, device=cpu, description="s")
    assert losses[-1] < losses[0]
    from edgekd.metrics import accuracy

    assert accuracy(student, data.loader("test", 256), torch.device("cpu")) > 0.8
