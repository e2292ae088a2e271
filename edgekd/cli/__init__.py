"""The `edgekd` command: parses arguments, calls `edgekd.api`, prints through the report
renderers, maps errors to exit codes. One module per group of commands: `compress` and
`validate` here, `gate`/`report`, `bench`, `check`/`export` beside it.

Exit codes: 0 success · 1 runtime failure, failed gate, or a system failure (disk full, permission
denied) · 2 bad input (recipe, arguments, files)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from edgekd import api, terminal
from edgekd.errors import EdgekdError, GateFailed
from edgekd.cli.bench import bench_command
from edgekd.cli.export import check_command, export_command
from edgekd.cli.gate import gate_command, report_command
from edgekd.registry import NO_USER_CODE_ENV
from edgekd.report import print_summary, render_gates, verdict_line

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = terminal.console(stderr=True)

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a recipe field, e.g. --set distill.temperature=2 (repeatable)."),
]


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also EDGEKD_DEBUG=1).")] = False,
    no_user_code: Annotated[
        bool, typer.Option("--no-user-code", help=f"Refuse every 'pkg.module:callable' spec (also {NO_USER_CODE_ENV}=1).")
    ] = False,
) -> None:
    """Compress neural networks for edge devices: prune / QAT with teacher-guided recovery,
    ONNX export, benchmarks, CI gates. One recipe, one run: a small, fast, accurate model and an
    honest report.

    Exit codes: 0 success; 1 a runtime failure (training diverged, a gate failed, the disk is
    full, permission denied); 2 bad input (recipe, arguments, missing or damaged files).

    Trust: a recipe, a run folder (its recipe.json) and the "pkg.module:callable" specs in them
    are code, like a Makefile: edgekd imports and calls what they name. Run only those you
    trust. Checkpoints, caches and ONNX files are data: loading them never runs code. For
    untrusted input (CI on pull requests from forks) use --no-user-code or set
    EDGEKD_NO_USER_CODE=1: every pkg.module: spec is then refused before anything runs.
    """
    if no_user_code:  # through the environment, so torchrun's worker processes refuse it too
        os.environ[NO_USER_CODE_ENV] = "1"


@app.command()
def compress(
    ctx: typer.Context,
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    set_: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue after the last finished step in the workdir; the recipe may append stages to a finished run.")] = False,
    workdir: Annotated[Optional[Path], typer.Option(help="Run folder (overrides the recipe's workdir).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final table.")] = False,
    nproc: Annotated[int, typer.Option(min=1, help="Train with N data-parallel processes (launches torchrun).")] = 1,
    force_unlock: Annotated[
        bool, typer.Option("--force-unlock", help="Take over a workdir lock held from another host (only if no run is active there).")
    ] = False,
) -> None:
    """Run a recipe: train/load the teacher, then every stage (compress ↔ recover), export, bench, gates.

    Example:  edgekd compress recipes/quickstart.yaml --set distill.temperature=2
    """
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        # Every process re-runs this very command line, less --nproc: torchrun's parser would take it for its own.
        raise typer.Exit(api.launch_distributed(nproc, _without_option(ctx.obj["argv"], "--nproc")))
    overrides = list(set_ or []) + ([f"workdir={_yaml_string(str(workdir))}"] if workdir else [])
    console = terminal.console()
    report = api.compress(recipe, set=overrides, resume=resume, quiet=quiet, console=console, force_unlock=force_unlock)
    print_summary(report, console)
    workdir = Path(report.workdir or ".")
    console.print(f"report: {workdir / 'report.json'} · {workdir / 'report.html'}")
    if report.gates:
        results = report.gates
        render_gates(results, console)
        if not all(r.passed for r in results):
            raise GateFailed(f"{verdict_line(results)} (the report is written: {workdir / 'report.json'})")


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    set_: SetOption = None,
) -> None:
    """Check a recipe without running it; lists every problem with its field path.

    Example:  edgekd validate recipes/quickstart.yaml --set stages[0].recover.epochs=3
    """
    checked = api.validate(recipe, list(set_ or []))
    stages = ", ".join(p.key for p in checked.plan) or "no stages"
    terminal.console().print(f"{recipe}: valid ({checked.name}: {stages})")


app.command("bench")(bench_command)
app.command("check")(check_command)
app.command("export")(export_command)
app.command("gate")(gate_command)
app.command("report")(report_command)


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` / `option=VALUE`."""
    kept: list[str] = []
    skip = False
    for argument in argv:
        if skip or argument.startswith(f"{option}="):
            skip = False
            continue
        skip = argument == option
        if not skip:
            kept.append(argument)
    return kept


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-paragraph errors, tracebacks only with --debug / EDGEKD_DEBUG=1."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("EDGEKD_DEBUG") == "1"
    try:
        # Without standalone mode, click returns typer.Exit's code instead of raising it.
        code = app(args=args, prog_name="edgekd", standalone_mode=False, obj={"argv": list(args)})
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:  # --help, and commands that end early on purpose
        sys.exit(exc.exit_code)
    except typer.exceptions.TyperException as exc:  # usage errors: unknown option, missing argument
        if hasattr(exc, "show"):
            exc.show()
        else:
            _error("error:", exc.format_message())
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except EdgekdError as exc:
        if debug:
            traceback.print_exc()
        _error("error:", str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished steps are checkpointed — continue with --resume")
        sys.exit(130)
    except OSError as exc:  # the system refused a file: not a bug in edgekd, and nothing to report
        if debug:
            traceback.print_exc()
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        _error("error:", f"cannot use{where}: {exc.strerror or exc}. Finished steps are checkpointed.")
        sys.exit(1)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        _error(
            "internal error:",
            f"{type(exc).__name__}: {exc}. Finished steps are checkpointed. Re-run with --debug for the traceback and report it.",
        )
        sys.exit(1)


def _error(label: str, message: str) -> None:
    err_console.print(Text.assemble((label, "bold red"), " ", message), highlight=False, soft_wrap=True)


def _yaml_string(text: str) -> str:
    """A --set value that YAML reads back as exactly this string (a folder named `on` or `1e3` too)."""
    import json

    return json.dumps(text)
