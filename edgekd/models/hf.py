"""Hugging Face transformers as teachers and students, never downloaded:

- `hf:path/to/dir` loads a saved model with `from_pretrained(dir, local_files_only=True,
  trust_remote_code=False)`: a folder is data, never code, so `--no-user-code` allows it and a folder
  whose config asks for its own modeling code is refused;
- `hf-config:gpt2(n_layer=2, n_embd=64, n_head=4)` builds a randomly initialised model from a
  config of that `model_type`, with literal-only arguments like every model spec.

The head class follows the data's task: image or sequence classification (with the
data's class count as `num_labels`), causal LM, or seq2seq LM. The data's facts
(vocabulary size, longest sequence, padding token, input channels, image size) fill
the config fields that take them, unless the spec sets those fields itself.

transformers is optional (`pip install 'edgekd[text]'`); the image path never imports it.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from edgekd.errors import InputError
from edgekd.facts import DataFacts
from edgekd.registry import HF_CONFIG_PREFIX as CONFIG_PREFIX
from edgekd.registry import HF_LOCAL_PREFIX as LOCAL_PREFIX
from edgekd.registry import unknown_name

# (inputs, task) → the transformers auto class whose head fits.
AUTO_CLASSES = {
    ("image", "classify"): "AutoModelForImageClassification",
    ("tokens", "classify"): "AutoModelForSequenceClassification",
    ("tokens", "causal-lm"): "AutoModelForCausalLM",
    ("tokens", "seq2seq"): "AutoModelForSeq2SeqLM",
}


CLASSIFIER_ARCHITECTURES = ("ForSequenceClassification", "ForImageClassification")


def is_hf_spec(name: str) -> bool:
    return name.startswith((LOCAL_PREFIX, CONFIG_PREFIX))


def require_transformers(what: str) -> ModuleType:
    """Import transformers, or say which extra installs it."""
    try:
        import transformers
    except ImportError:
        raise InputError(
            f"{what} needs the Hugging Face transformers library, which is not installed: "
            "pip install 'edgekd[text]' (transformers and tokenizers)"
        ) from None
    return transformers


def build_hf(name: str, kwargs: dict[str, Any], facts: DataFacts) -> nn.Module:
    """The model an `hf:` or `hf-config:` spec names, with a head for `facts.task`."""
    transformers = require_transformers(f"model spec {name!r}")
    auto = getattr(transformers, _auto_class_name(name, facts))
    if name.startswith(CONFIG_PREFIX):
        return _from_config(transformers, auto, name, kwargs, facts)
    return _from_directory(transformers, auto, name, kwargs, facts)


def _auto_class_name(name: str, facts: DataFacts) -> str:
    key = (facts.inputs, facts.task)
    if key not in AUTO_CLASSES:
        raise InputError(f"model spec {name!r}: no Hugging Face head for {facts.task} on {facts.inputs} inputs")
    return AUTO_CLASSES[key]


def _config_fields(config: Any, facts: DataFacts) -> dict[str, Any]:
    """Config fields filled from the data, for those this config has."""
    wanted: dict[str, Any] = {
        "vocab_size": facts.vocab_size,
        "max_position_embeddings": facts.max_length,
        "pad_token_id": facts.pad_id,
        "num_channels": facts.in_channels,
        "image_size": facts.image_size,
    }
    fields = {key: value for key, value in wanted.items() if value is not None and hasattr(config, key)}
    if facts.task == "classify" and facts.num_classes is not None:
        fields["num_labels"] = facts.num_classes
    if facts.task == "seq2seq" and facts.decoder_start_id is not None:
        fields["decoder_start_token_id"] = facts.decoder_start_id
    if facts.vocab_size is not None:
        # Defaults of a large vocabulary (GPT-2's 50256) would point past a small one.
        for key in ("bos_token_id", "eos_token_id"):
            default = getattr(config, key, None)
            if isinstance(default, int) and default >= facts.vocab_size:
                fields[key] = facts.eos_id
    if facts.eos_id is not None and hasattr(config, "eos_token_id"):
        fields["eos_token_id"] = facts.eos_id
    return fields


def _check_fields(name: str, config: Any, kwargs: dict[str, Any]) -> None:
    """A config accepts any keyword silently; a misspelt field would be lost, so name it."""
    parameters = inspect.signature(type(config).__init__).parameters
    unknown = [k for k in kwargs if not (hasattr(config, k) or k in parameters or k.endswith("_token_id"))]
    if unknown:
        known = set(parameters) - {"self", "kwargs"}
        raise InputError(f"model spec {name!r}: {unknown_name(f'{type(config).__name__} field', unknown[0], known)}")


def _from_config(transformers: ModuleType, auto: Any, name: str, kwargs: dict[str, Any], facts: DataFacts) -> nn.Module:
    model_type = name[len(CONFIG_PREFIX) :]
    mapping = transformers.models.auto.configuration_auto.CONFIG_MAPPING
    if model_type not in mapping:
        raise InputError(
            f"model spec {name!r}: {unknown_name('transformers model_type', model_type, mapping.keys())}"
        )
    defaults = transformers.AutoConfig.for_model(model_type)
    _check_fields(name, defaults, kwargs)
    # One name per field (GPT-2's max_position_embeddings is n_positions), so the spec's value wins.
    canonical = getattr(defaults, "attribute_map", {})
    settings = {canonical.get(k, k): v for k, v in [*_config_fields(defaults, facts).items(), *kwargs.items()]}
    try:
        config = transformers.AutoConfig.for_model(model_type, **settings)
        return auto.from_config(config)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"model spec {name!r}: {' '.join(str(exc).split())}") from None


def _from_directory(transformers: ModuleType, auto: Any, name: str, kwargs: dict[str, Any], facts: DataFacts) -> nn.Module:
    path = Path(name[len(LOCAL_PREFIX) :])
    if not (path / "config.json").is_file():
        state = "has no config.json" if path.is_dir() else "does not exist"
        raise InputError(
            f"model spec {name!r}: the folder {str(path)!r} {state}; give a folder written by save_pretrained "
            "(edgekd never downloads models)"
        )
    if "auto_map" in _read_json(path / "config.json", name):
        raise InputError(
            f"model spec {name!r}: {str(path / 'config.json')!r} asks for the folder's own modeling code (auto_map); "
            "edgekd never runs code from a model folder (trust_remote_code stays off). Use a model type transformers "
            "ships, or build the model in a pkg.module:callable of your own"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"model spec {name!r}: {str(path / 'config.json')!r} cannot be read: {exc}") from None
    _check_fields(name, config, kwargs)
    overrides = dict(kwargs)
    # A saved classifier must fit the data; a body saved without one gets a fresh head of the data's size.
    trained_head = any(arch.endswith(CLASSIFIER_ARCHITECTURES) for arch in config.architectures or [])
    if facts.task == "classify" and facts.num_classes is not None and config.num_labels != facts.num_classes:
        if trained_head:
            raise InputError(
                f"model spec {name!r} classifies into {config.num_labels} classes but the data has {facts.num_classes}"
            )
        overrides["num_labels"] = facts.num_classes
    try:
        model = auto.from_pretrained(path, local_files_only=True, trust_remote_code=False, **overrides)
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"model spec {name!r}: cannot load {str(path)!r}: {' '.join(str(exc).split())}") from None
    embeddings = model.get_input_embeddings() if facts.inputs == "tokens" else None
    if facts.vocab_size is not None and isinstance(embeddings, nn.Embedding) and embeddings.num_embeddings < facts.vocab_size:
        raise InputError(
            f"model spec {name!r} knows {embeddings.num_embeddings} tokens but the data's tokenizer has {facts.vocab_size}; "
            f"tokenize with the model's own tokenizer (data.options.tokenizer: {str(path)!r})"
        )
    return model


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"model spec {name!r}: {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"model spec {name!r}: {str(path)!r} holds no JSON object")
    return data
