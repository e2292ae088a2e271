"""Models: built-ins, specs with arguments, user callables, checkpoint loading."""

from edgekd.models import builtin  # noqa: F401  (registers the built-in models)
from edgekd.models import vit  # noqa: F401  (registers vit_s)
from edgekd.models.registry import models
from edgekd.models.spec import build_model, check_runs, load_state_dict_file, load_tensors, parse_spec

__all__ = ["models", "build_model", "check_runs", "load_state_dict_file", "load_tensors", "parse_spec"]
