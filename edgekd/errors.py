"""The errors edgekd raises on purpose, and the exit code each maps to.

The CLI turns these into one-paragraph messages; anything else is a bug and
keeps its traceback (exit 1)."""


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
