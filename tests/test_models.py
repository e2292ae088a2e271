import pytest
import torch

from edgekd.errors import InputError
from edgekd.models import build_model, card_of, load_state_dict_file, model_names, models, parse_spec
from tests.conftest import card_facts


@pytest.mark.parametrize("name", model_names("image"))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 28, 28)])
def test_every_registered_model_builds_and_runs(name, shape):
    model = build_model(name, in_channels=shape[0], num_classes=7, image_size=shape[-1]).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_carries_a_tiny_spec_smaller_than_its_default(name):
    assert parse_spec(card_of(name).tiny)[0] == name
    tiny = build_model(card_of(name).tiny, card_facts(name))
    default = build_model(name, card_facts(name))
    assert sum(p.numel() for p in tiny.parameters()) < sum(p.numel() for p in default.parameters())


def test_spec_arguments_are_literals_only():
    assert parse_spec("resnet_s(depth=20, width=8)") == ("resnet_s", {"depth": 20, "width": 8})
    for bad in ("resnet_s(__import__('os'))", "resnet_s(width=os.getcwd())", "resnet_s(width=8"):
        with pytest.raises(InputError):
            parse_spec(bad)


def test_bad_arguments_name_the_spec():
    with pytest.raises(InputError, match="resnet_s"):
        build_model("resnet_s(depth=9)", in_channels=1, num_classes=10)
    with pytest.raises(InputError, match="Did you mean 'resnet_s'"):
        build_model("resnet(width=8)", in_channels=1, num_classes=10)


def tiny_linear(num_classes=10, hidden=8):
    """A user model referenced as 'tests.test_models:tiny_linear' (it takes no in_channels)."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))


def test_user_callable_model_receives_only_the_arguments_it_accepts():
    model = build_model("tests.test_models:tiny_linear(hidden=4)", in_channels=1, num_classes=3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_checkpoint_loading(tmp_path):
    model = build_model("cnn(width=4)", in_channels=1, num_classes=10)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    other = build_model("cnn(width=4)", in_channels=1, num_classes=10)
    load_state_dict_file(other, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="corrupt.pt"):
        load_state_dict_file(other, tmp_path / "corrupt.pt")
    with pytest.raises(InputError, match="does not fit the model"):
        load_state_dict_file(build_model("cnn(width=8)", in_channels=1, num_classes=10), path)
