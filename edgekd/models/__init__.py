"""Models: built-ins, specs with arguments, user callables, checkpoint loading."""

from edgekd.models import builtin  # noqa: F401  (registers the built-in models)
from edgekd.models import vit  # noqa: F401  (registers vit_s)
from edgekd.models.registry import models, tiny, tiny_spec
from edgekd.models.spec import ModelSpec, build_model, check_runs, check_spec, load_state_dict_file, load_tensors, parse_spec

__all__ = [
    "ModelSpec", "build_model", "check_runs", "check_spec", "load_state_dict_file", "load_tensors", "models", "parse_spec",
    "tiny", "tiny_spec",
]
