"""The `edgekd gate` and `edgekd report` commands, as plain typer-annotated functions.

The main CLI registers them (`app.command("gate")(gate_command)`) and maps the
EdgekdError subclasses they raise to exit codes: GateFailed → 1, InputError → 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError

from edgekd import api, terminal
from edgekd.errors import GateFailed, InputError
from edgekd.files import output_file
from edgekd.gate import BaselineLimits, GatesConfig, parse_fraction
from edgekd.report import append_github_summary, github_summary_path, render_gates, verdict_line, write_junit

def _cli_config(values: dict[str, Any]) -> GatesConfig:
    try:
        return GatesConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']} (got {e['input']!r})" for e in exc.errors())
        raise InputError(f"{problems}. Accuracies are fractions (0.9 = 90%), drops are points (0.5 = 0.5%).") from None


def _check_combination(limits: BaselineLimits, has_baseline: bool) -> None:
    if has_baseline and not limits.has_thresholds():
        raise InputError("--baseline needs a limit to compare with: --max-accuracy-drop, --max-size-growth or --max-speedup-drop")
    if not has_baseline and limits.has_thresholds():
        raise InputError("--max-size-growth and --max-speedup-drop compare with a reference run: add --baseline main/report.json")


def gate_command(
    report: Annotated[Path, typer.Argument(help="report.json of the run to check.", show_default=False)],
    baseline: Annotated[Optional[Path], typer.Option(help="report.json of a reference run (e.g. from main) to compare with.")] = None,
    max_accuracy_drop: Annotated[
        Optional[float], typer.Option(help="Most accuracy points lost: vs --baseline if given, else vs the teacher (0.5 = 0.5%).")
    ] = None,
    max_size_growth: Annotated[
        Optional[float], typer.Option(parser=parse_fraction, metavar="PCT", help="Most growth of the deployed file vs --baseline: 5% or 0.05.")
    ] = None,
    max_speedup_drop: Annotated[
        Optional[float], typer.Option(parser=parse_fraction, metavar="PCT", help="Most loss of speedup vs --baseline's speedup: 10% or 0.1.")
    ] = None,
    min_accuracy: Annotated[Optional[float], typer.Option(help="Lowest accuracy of the deployed model, a fraction (0.9 = 90%).")] = None,
    max_size_mb: Annotated[Optional[float], typer.Option(help="Largest deployed file in MB (10^6 bytes).")] = None,
    min_speedup: Annotated[Optional[float], typer.Option(help="Lowest speedup vs the teacher, measured in the run.")] = None,
    speedup_batch: Annotated[Optional[int], typer.Option(help="Batch size the speedup gates read (default: the largest benchmarked).")] = None,
    max_latency_ms: Annotated[
        Optional[float], typer.Option(help="Highest median latency of the deployed model in ms. Absolute time: only meaningful on a pinned device.")
    ] = None,
    latency_batch: Annotated[Optional[int], typer.Option(help="Batch size for --max-latency-ms (default: the smallest benchmarked).")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Also write the verdicts as JUnit XML, one testcase per gate.")] = None,
) -> None:
    """Check a run against quality gates: exit 0 when all pass, 1 when any fails, 2 for bad input.

    With no threshold given, re-checks the gates of the recipe the run came from.
    With $GITHUB_STEP_SUMMARY set (GitHub Actions), appends a Markdown table there.

    Example:  edgekd gate runs/ci/report.json --baseline ci/baseline-report.json --max-accuracy-drop 1 --max-size-growth 5% --junit gates.xml
    """
    if junit is not None:  # where the verdicts go is checked before they are computed
        output_file(junit, "--junit")
    github_summary_path()
    has_baseline = baseline is not None
    limits = BaselineLimits(
        max_accuracy_drop=max_accuracy_drop if has_baseline else None,
        max_size_growth=max_size_growth,
        max_speedup_drop=max_speedup_drop,
    )
    _check_combination(limits, has_baseline)
    config = _cli_config({
        "min_accuracy": min_accuracy, "max_accuracy_drop": None if has_baseline else max_accuracy_drop,
        "max_size_mb": max_size_mb, "min_speedup": min_speedup, "speedup_batch": speedup_batch,
        "max_latency_ms": max_latency_ms, "latency_batch": latency_batch,
    })  # fmt: skip
    check = api.gate(report, baseline=baseline, gates=config, limits=limits)
    name = check.report.name
    title = f"edgekd gates · {name}" + (f" vs {baseline}" if baseline else "")
    render_gates(check.results, terminal.console(), title)
    if junit is not None:
        write_junit(check.results, junit, classname=f"edgekd.gates.{name}")
    append_github_summary(check.results, title)
    if not check.passed:
        raise GateFailed(verdict_line(check.results))


def report_command(
    run: Annotated[Path, typer.Argument(help="Run folder (or its report.json).", show_default=False)],
) -> None:
    """Write report.md and a self-contained report.html (plots embedded) into the run folder.

    Example:  edgekd report runs/quickstart   →  runs/quickstart/report.html
    """
    markdown_path, html_path = api.report(run)
    terminal.console().print(f"wrote {markdown_path}\nwrote {html_path}")
