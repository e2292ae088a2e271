"""Pruned students saved and loaded as data: structure capture, a fresh process, pickles refused."""

import json
import os
import subprocess
import sys

import pytest
import torch

from edgekd.data import load_data
from edgekd.errors import InputError
from edgekd.models import build_model, card_of, model_names
from edgekd.prune import ChannelPruner, PruneConfig, apply_structure, capture_structure, load_pruned, save_pruned

SPECS = [card_of(name).tiny for name in model_names("image")]  # text models: test_prune_transformers


@pytest.fixture(scope="module")
def images():
    return load_data("digits", seed=0).test.tensors[0][:16]


def pruned(spec: str, images: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, in_channels=1, num_classes=10)
    pruner = ChannelPruner(model, images[:1], PruneConfig(target_macs=0.5, round_to=2))
    pruner.prune_to(0.5 * pruner.measure("macs"))
    return model.eval()


@pytest.mark.parametrize("spec", SPECS)
def test_structure_rebuilds_the_pruned_architecture_from_a_fresh_model(spec, images):
    model = pruned(spec, images)
    structure = json.loads(json.dumps(capture_structure(model)))  # plain JSON survives
    fresh = build_model(spec, in_channels=1, num_classes=10)
    apply_structure(fresh, structure)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(images), model(images))


def test_save_then_load_in_a_fresh_process_reproduces_outputs_exactly(images, tmp_path):
    expected = []
    for index, spec in enumerate(SPECS):
        model = pruned(spec, images)
        save_pruned(model, tmp_path / f"model{index}.pt", spec, in_channels=1, num_classes=10)
        with torch.no_grad():
            expected.append(model(images))
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch\n"
        "from edgekd.prune import load_pruned\n"
        "folder = sys.argv[1]\n"
        "images = torch.load(f'{folder}/images.pt', weights_only=True)\n"
        f"for index in range({len(SPECS)}):\n"
        "    with torch.no_grad():\n"
        "        torch.save(load_pruned(f'{folder}/model{index}.pt')(images), f'{folder}/out{index}.pt')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, timeout=120)
    for index, spec in enumerate(SPECS):
        assert torch.equal(torch.load(tmp_path / f"out{index}.pt", weights_only=True), expected[index]), spec


def test_a_pickled_whole_model_needs_an_explicit_opt_in(images, tmp_path):
    model = pruned("resnet_s(width=8)", images)
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(InputError, match=r"allow_pickle=True"):
        load_pruned(path)
    with torch.no_grad():
        assert torch.equal(load_pruned(path, allow_pickle=True)(images), model(images))


def test_load_pruned_explains_files_it_cannot_use(images, tmp_path):
    model = pruned("resnet_s(width=8)", images)
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(InputError, match="not a pruned model written by save_pruned"):
        load_pruned(plain)
    with pytest.raises(InputError, match="does not exist"):
        load_pruned(tmp_path / "missing.pt")
    saved = tmp_path / "pruned.pt"
    save_pruned(model, saved, "resnet_s(width=8)", in_channels=1, num_classes=10)
    with pytest.raises(InputError, match="names module 'layers.1.shortcut.0', which this model does not have"):
        load_pruned(saved, model_spec="resnet_s(width=8, depth=14)")
    save_pruned(pruned("cnn(width=8)", images), saved, "cnn(width=8)", in_channels=1, num_classes=10)
    with pytest.raises(InputError, match=r"do not fit model 'cnn\(width=8, depth=3\)'"):
        load_pruned(saved, model_spec="cnn(width=8, depth=3)")
