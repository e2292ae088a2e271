"""Models: built-ins (image CNNs, a ViT, small text transformers), specs with arguments,
user callables, Hugging Face models and checkpoint loading. The output adapter every caller
of a model goes through is the leaf `edgekd.outputs`."""

from edgekd.models import builtin  # noqa: F401  (registers the built-in models)
from edgekd.models import transformer  # noqa: F401  (registers bert_s, gpt_s, t5_s)
from edgekd.models import vit  # noqa: F401  (registers vit_s)
from edgekd.models.registry import ModelCard, card, card_of, model_names, models
from edgekd.models.spec import ModelSpec, build_model, check_runs, check_spec, load_state_dict_file, load_tensors, parse_spec

__all__ = [
    "ModelCard", "ModelSpec", "build_model", "card", "card_of", "check_runs", "check_spec", "load_state_dict_file",
    "load_tensors", "model_names", "models", "parse_spec",
]
