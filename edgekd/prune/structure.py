"""Pruned architectures as data: rebuild one from a freshly built model without unpickling code.

`capture_structure` describes, for every module, its integer attributes (channels,
features, groups, heads) and the shapes of its own parameters and buffers — all
JSON-able — and, for a Hugging Face model, the sizes its config holds (under
"@config"). `apply_structure` reshapes a freshly built model to match, after which
the pruned state_dict loads as usual. `save_pruned` / `load_pruned` put both in
one file that `torch.load(weights_only=True)` can read, with the data facts the
model was built for.

>>> from edgekd.models import build_model
>>> pruned = build_model("cnn(width=8)", in_channels=1, num_classes=10)
>>> pruned.fc = torch.nn.Linear(12, 10)  # stands in for a pruned layer
>>> fresh = build_model("cnn(width=8)", in_channels=1, num_classes=10)
>>> apply_structure(fresh, capture_structure(pruned))
>>> fresh.fc.in_features, tuple(fresh.fc.weight.shape)
(12, (10, 12))
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.facts import DataFacts
from edgekd.models import build_model
from edgekd.prune.hf import config_sizes, is_hf_model, restore_sizes

PRUNED_FORMAT = "edgekd.pruned/1"
CONFIG_KEY = "@config"  # not a module path: a Hugging Face model's config sizes


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _structural_attributes(module: nn.Module) -> dict[str, Any]:
    """Public int (or int-tuple) attributes: in/out channels, features, groups, num_heads, head_dim …"""
    found: dict[str, Any] = {}
    for key, value in vars(module).items():
        if key.startswith("_"):
            continue
        if _is_int(value):
            found[key] = value
        elif isinstance(value, tuple) and value and all(_is_int(v) for v in value):
            found[key] = list(value)
    return found


def capture_structure(model: nn.Module) -> dict[str, Any]:
    """A JSON-able description of every module's shape-deciding attributes and tensor shapes."""
    structure: dict[str, Any] = {}
    for name, module in model.named_modules():
        entry = {
            "attributes": _structural_attributes(module),
            "parameters": {k: list(p.shape) for k, p in module.named_parameters(recurse=False)},
            "buffers": {k: list(b.shape) for k, b in module.named_buffers(recurse=False)},
        }
        if any(entry.values()):
            structure[name] = entry
    if is_hf_model(model):
        structure[CONFIG_KEY] = config_sizes(model)
    return structure


def apply_structure(model: nn.Module, structure: dict[str, Any]) -> None:
    """Reshape `model` (freshly built from the same spec) in place to the captured structure.

    Tensors whose shape changes are replaced by uninitialised ones; load the pruned state_dict next."""
    modules = dict(model.named_modules())
    for name, entry in structure.items():
        if name == CONFIG_KEY:
            restore_sizes(model, entry)
            continue
        module = modules.get(name)
        if module is None:
            raise InputError(f"the pruned structure names module {name!r}, which this model does not have; was it built from another spec?")
        for key, value in entry["attributes"].items():
            current = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(current, tuple) else value)
        for key, shape in entry["parameters"].items():
            old = getattr(module, key)
            if list(old.shape) != shape:
                setattr(module, key, nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad))
        for key, shape in entry["buffers"].items():
            old = getattr(module, key)
            if list(old.shape) != shape:
                setattr(module, key, old.new_empty(shape))  # an existing buffer name stays a buffer
    if is_hf_model(model):
        model.tie_weights()  # reshaping gave tied embeddings separate tensors


def save_pruned(model: nn.Module, path: str | Path, spec: str, facts: DataFacts | None = None, **fact_fields: Any) -> None:
    """Write a pruned model as its spec, the data facts it was built for, its structure and its
    weights — no pickled classes. Keyword facts are a shorthand, as for build_model."""
    facts = replace(facts or DataFacts(), **fact_fields)
    payload = {
        "format": PRUNED_FORMAT,
        "spec": spec,
        "facts": facts.to_dict(),
        "structure": capture_structure(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, Path(path))


def load_pruned(path: str | Path, model_spec: str | None = None, allow_pickle: bool = False) -> nn.Module:
    """Rebuild a model written by `save_pruned` (from `model_spec`, default: the spec saved with it).

    A whole pickled model (`torch.save(model)`) runs code from the file while loading,
    so it is refused unless `allow_pickle=True` says its source is trusted."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pruned model file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise InputError(
                f"{str(path)!r} holds pickled Python objects (e.g. a whole model saved with torch.save(model)); "
                "loading it would run code from the file. If you trust its source, pass allow_pickle=True; "
                "files written by save_pruned never need it."
            ) from None
        return _trusted_pickle(path)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise InputError(f"pruned model file {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != PRUNED_FORMAT:
        raise InputError(
            f"{str(path)!r} is not a pruned model written by save_pruned (no {PRUNED_FORMAT!r} format tag); "
            "a plain state_dict loads with edgekd.models.load_state_dict_file"
        )
    # Files from before facts were stored hold in_channels and num_classes beside the spec.
    facts = DataFacts.from_dict(payload.get("facts") or payload)
    model = build_model(model_spec or payload["spec"], facts)
    apply_structure(model, payload["structure"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"the weights in {str(path)!r} do not fit model {model_spec or payload['spec']!r}: {str(exc).splitlines()[0]}") from None
    if is_hf_model(model):
        model.tie_weights()
    return model.eval()


def _trusted_pickle(path: Path) -> nn.Module:
    model = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(model, nn.Module):
        raise InputError(f"{str(path)!r} unpickled to {type(model).__name__}, not a torch.nn.Module")
    return model.eval()
