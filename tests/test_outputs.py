"""The one adapter between models and their callers: inputs of any shape in, logits out of any output."""

import pytest
import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.outputs import first_samples, flatten_tokens, logits_of, move_inputs, run_model


class Returns(nn.Module):
    """Wraps a linear layer and returns its logits in the form `kind` names."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor):
        logits = self.fc(x)
        return {
            "tensor": logits,
            "tuple": (logits, x),
            "list": [logits, x],
            "dict": {"hidden": x, "logits": logits},
            "tuple of dict": ({"logits": logits}, x),  # e.g. a wrapper returning (model output, auxiliary loss)
        }[self.kind]


@pytest.mark.parametrize("kind", ["tensor", "tuple", "list", "dict", "tuple of dict"])
def test_logits_are_found_in_every_plain_output_form(kind):
    model = Returns(kind)
    x = torch.randn(2, 4)
    torch.testing.assert_close(logits_of(model(x)), model.fc(x))


def test_logits_of_a_real_hugging_face_model_output():
    from tests.hf_tiny import bert_classifier, transformers  # skips without transformers

    model = bert_classifier(labels=3)
    ids = torch.randint(3, 64, (2, 7))
    output = model(input_ids=ids, labels=torch.tensor([0, 2]))  # with labels, the output's first field is the loss
    assert isinstance(output, transformers.modeling_outputs.SequenceClassifierOutput)
    assert logits_of(output) is output.logits and logits_of(output).shape == (2, 3)


def test_an_output_without_logits_is_named():
    with pytest.raises(InputError, match="returned str, which holds no logits"):
        logits_of("not a tensor")
    with pytest.raises(InputError, match="holds no logits"):
        logits_of({"hidden": torch.zeros(1)})


def test_inputs_are_passed_positionally_or_by_keyword():
    class TwoInputs(nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids * (1 if attention_mask is None else attention_mask)

    model = TwoInputs()
    ids, mask = torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]])
    assert run_model(model, ids).tolist() == [[1, 2, 3]]
    assert run_model(model, (ids, mask)).tolist() == [[1, 2, 0]]
    assert run_model(model, {"input_ids": ids, "attention_mask": mask}).tolist() == [[1, 2, 0]]


def test_batches_are_sliced_and_moved_whatever_their_form():
    batch = {"input_ids": torch.arange(12).reshape(4, 3), "attention_mask": torch.ones(4, 3)}
    first = first_samples(batch, 2)
    assert first["input_ids"].tolist() == [[0, 1, 2], [3, 4, 5]] and first["attention_mask"].shape == (2, 3)
    assert first_samples(torch.zeros(5, 2)).shape == (1, 2)
    moved = move_inputs(batch, "cpu")
    assert moved.keys() == batch.keys() and moved["input_ids"].device.type == "cpu"


def test_token_logits_flatten_for_cross_entropy_and_skip_ignored_targets():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [9.0, -9.0]]])  # one sequence of three tokens
    targets = torch.tensor([[0, 1, -100]])
    flat_logits, flat_targets = flatten_tokens(logits, targets)
    assert flat_logits.shape == (3, 2) and flat_targets.tolist() == [0, 1, -100]
    loss = nn.functional.cross_entropy(flat_logits, flat_targets)
    assert loss.item() == pytest.approx(-torch.log_softmax(torch.tensor([5.0, 0.0]), 0)[0].item(), rel=1e-6)
    per_sample = torch.randn(4, 3)
    assert flatten_tokens(per_sample, torch.zeros(4, dtype=torch.long))[0] is per_sample
