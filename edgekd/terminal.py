"""The console every command prints through."""

from __future__ import annotations

from rich.console import Console


def console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """Rich markup off: user strings (paths, report and model names) print as they are, so a `[/x]`
    in one is text, not a tag. Styles go through `style=` and `rich.text.Text` instead."""
    return Console(stderr=stderr, quiet=quiet, markup=False)
