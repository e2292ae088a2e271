"""edgekd: make neural networks small and fast enough for edge devices, in one honest run.

The Python API (`edgekd.compress`, `edgekd.validate`, `edgekd.export_run`; the rest in
`edgekd.api`) loads on first use (PEP 562), so importing one module of the package
(`edgekd.errors`, a stage package) never drags in the runner and every stage with it."""

from __future__ import annotations

from typing import Any

from edgekd.version import __version__

# Not `gate` or `report`: those names are the edgekd.gate and edgekd.report modules.
_API = ("compress", "export_run", "validate")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from edgekd import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
