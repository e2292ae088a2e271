"""The errors edgekd raises on purpose, and the exit code each maps to.

The CLI turns these into one-paragraph messages; an OSError (the system refused to
read or write a file) names the file; anything else is a bug and keeps its
traceback (exit 1)."""

from pathlib import Path
from typing import Any, Callable


class EdgekdError(Exception):
    """A failure while running: training diverged, a target was unreachable. Exit code 1."""

    exit_code = 1


class InputError(EdgekdError):
    """Bad input from the user: a recipe field, a missing file, a wrong shape. Exit code 2."""

    exit_code = 2


class RecipeError(InputError):
    """A recipe that does not validate; carries every problem with its field path."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = problems
        self.source = source
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source} is not valid:\n{listing}")


class GateFailed(EdgekdError):
    """One or more quality gates failed; the report is already written. Exit code 1."""


class WriteFailed(EdgekdError):
    """The system refused a write (disk full, permission denied): not a bug, and not bad input. Exit code 1."""


class NotFinite(EdgekdError):
    """A model produced NaN or infinite outputs (diverged weights, a broken export). Exit code 1."""


def read_mapping_file(
    path: str | Path, what: str, parse: Callable[[str], Any], parse_errors: tuple[type[Exception], ...], expected: str
) -> dict[str, Any]:
    """Read a file that must hold a mapping (a recipe, a report): InputError naming the file when it
    is missing, does not parse (`expected` says as what) or holds something other than a mapping."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist")
    try:
        data = parse(path.read_text())
    except (*parse_errors, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {str(path)!r} is not {expected}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {str(path)!r} must hold a mapping at the top, not a {type(data).__name__}")
    return data
