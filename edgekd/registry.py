"""One registry class for every kind of plug-in: models, datasets, stages,
distillation methods, importance criteria, quantization profiles, bench backends,
check targets — and the one "unknown name" check every recipe field and flag uses.

>>> widgets = Registry("widget")
>>> @widgets.register
... def small_widget(): return "small"
>>> widgets.get("small_widget")()
'small'
>>> widgets.names()
['small_widget']
>>> widgets.check("smal_widget")
Traceback (most recent call last):
ValueError: unknown widget 'smal_widget'. Did you mean 'small_widget'? Known: small_widget.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import warnings
from typing import Annotated, Any, Callable, Generic, Iterable, Iterator, TypeVar

from pydantic import AfterValidator

from edgekd.errors import InputError

T = TypeVar("T")


def close_matches(word: str, candidates: list[str], n: int = 3) -> str:
    """A ' Did you mean …?' suffix for an error message, or '' when nothing is close."""
    found = difflib.get_close_matches(word, candidates, n=n, cutoff=0.5)
    return f" Did you mean {', '.join(repr(f) for f in found)}?" if found else ""


def unknown_name(kind: str, name: str, known: Iterable[str], shown: int = 40) -> str:
    """The one message for a name that names nothing: `unknown <kind> 'x'. Did you mean …? Known: …`
    (the first `shown` known names, and how many there are when there are more)."""
    known = sorted(known)
    listed = ", ".join(known[:shown]) + (f", … ({len(known)} in all)" if len(known) > shown else "")
    return f"unknown {kind} {name!r}.{close_matches(name, known)} Known: {listed or 'none'}."


class Registry(Generic[T]):
    """Named plug-ins of one kind. The name defaults to the function's or class's name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, obj: T | None = None, *, name: str | None = None) -> Any:
        def add(item: T) -> T:
            key = name or getattr(item, "__name__")
            if key in self._entries:
                warnings.warn(f"{self.kind} {key!r} registered twice; the later one wins", stacklevel=3)
            self._entries[key] = item
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The entry named `name`; InputError (exit 2) with close matches when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(unknown_name(self.kind, name, self.names())) from None

    def check(self, name: str) -> str:
        """`name` when it is registered, else ValueError with close matches: what pydantic
        validators raise, so a recipe error names the field that holds the name."""
        if name not in self._entries:
            raise ValueError(unknown_name(self.kind, name, self.names()))
        return name

    def check_or_user_code(self, name: str) -> str:
        """`name` when it is registered or names user code as `"pkg.module:callable"` (imported
        only when used: validating a recipe never runs code)."""
        if ":" in name:
            module, _, attr = name.partition(":")
            if not module or not attr:
                raise ValueError(f"{name!r} is not of the form 'pkg.module:callable'")
            return name
        return self.check(name)

    def name_type(self, *, user_code: bool = False) -> Any:
        """A `str` type for config fields whose value must name an entry (or, with `user_code`,
        `"pkg.module:callable"`), e.g. `profile: ProfileName = "ort-x86"` with
        `ProfileName = profiles.name_type()`."""
        return Annotated[str, AfterValidator(self.check_or_user_code if user_code else self.check)]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]


NO_USER_CODE_ENV = "EDGEKD_NO_USER_CODE"
# `pkg.module:callable` or `pkg.module:callable(arg=1)`; `cuda:0` and `C:/data` are not specs.
USER_CODE_SPEC = re.compile(r"^\s*[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\s*(\(.*\))?\s*$", re.DOTALL)
# Hugging Face model specs (edgekd.models.hf) look like `pkg:name` but name no code: `hf:DIR` loads a local
# folder's config and weights (local_files_only, trust_remote_code off), `hf-config:TYPE(...)` builds a config.
HF_LOCAL_PREFIX, HF_CONFIG_PREFIX = "hf:", "hf-config:"


def names_user_code(spec: str) -> bool:
    """Whether a recipe string is a `pkg.module:callable` spec (Hugging Face model specs are not)."""
    text = spec.strip()
    return bool(USER_CODE_SPEC.match(text)) and not text.startswith((HF_LOCAL_PREFIX, HF_CONFIG_PREFIX))


def user_code_allowed() -> bool:
    """False under `--no-user-code` / EDGEKD_NO_USER_CODE=1 (CI on untrusted pull requests)."""
    return os.environ.get(NO_USER_CODE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def refused_user_code(spec: str, where: str) -> str:
    return (
        f"{where}: {spec!r} names user code (pkg.module:callable), which is refused because --no-user-code "
        f"or {NO_USER_CODE_ENV}=1 is set; use a built-in instead"
    )


def load_callable(spec: str) -> Callable[..., Any]:
    """Import `"pkg.module:attr"` — the one documented way to plug in user code (it runs that module's
    code); refused under --no-user-code. edgekd's own lookups by name use `import_callable`."""
    if not user_code_allowed():
        raise InputError(refused_user_code(spec, "user code"))
    return import_callable(spec)


def import_callable(spec: str) -> Callable[..., Any]:
    """Import `"pkg.module:attr"` without the user-code check: for names edgekd itself chose."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"{spec!r} is not of the form 'pkg.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import module {module_name!r} from {spec!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InputError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})")
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"{spec!r} is not callable")
    return target
