"""Rich tables for a BenchResult: one table per batch size and condition (a column per model,
the reference first), then findings and per-node profiles; the header says how the numbers
were measured — which mode, and with which session options.

edgekd's console prints with markup off (user strings print as they are), so this module writes
Rich markup with every user string escaped and turns it on where it prints: `markup=True`, and
`Text.from_markup` for table cells and titles."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgekd.bench.deployment import ratio_between
from edgekd.bench.result import CONFIDENCE, SESSION_RESOLUTION, BenchResult, Case, DeployedCase
from edgekd.bench.stats import CV_UNSTABLE, RoundRatio


def render(result: BenchResult, console: Console) -> None:
    console.print(_header(result), markup=True)
    for batch in result.settings.options.batch_sizes:
        for condition in result.conditions:
            console.print(_batch_table(result, batch, condition))
    for line in _condition_differences(result):
        console.print(line, markup=True)
    for finding in result.findings:
        console.print(f"[yellow]finding: {escape(finding)}[/]", markup=True)
    profiled = {(case.model, case.batch): case for case in result.cases if case.profile}
    for case in profiled.values():
        console.print(_profile_table(case))
    for note in result.notes:
        console.print(f"[dim]note: {escape(note)}[/]", markup=True)


def _header(result: BenchResult) -> str:
    s, env = result.settings, result.environment
    timing = s.timing
    threads = f"{s.options.threads} threads" if s.options.threads else f"default threads ({s.threads_effective})"
    cpu = env["cpu"]
    isa = " ".join(cpu["isa"]) or "no ISA flags read"
    lines = [
        f"[bold]edgekd bench[/] · {s.backend} · {threads} · warm-up {timing.warmup_s:g} s · "
        f"≥{timing.min_iterations} runs and ≥{timing.min_duration_s:g} s per "
        + ("process and batch" if result.mode == "deployment" else "model"),
        f"CPU {escape(cpu['model'])} ({cpu['logical_cores']} logical cores; {isa})"
        + (f" · GPU {escape(env['gpu'])}" if env.get("gpu") else ""),
    ]
    if result.mode == "deployment":
        lines.append(
            f"[dim]deployment mode: each model alone in a fresh process, {s.rounds} rounds in rotating order; "
            f"thread spinning: {', '.join(result.conditions)}; latency: median of the per-process medians; ratios vs "
            f"{escape(result.models[0].name)}: median over rounds of the per-round ratio, order-statistic CI[/]"
        )
    elif len(result.models) > 1:
        lines.append(
            f"[dim]paired mode: models interleaved in rotating blocks in one process; thread spinning: "
            f"{s.options.spinning}; ratios: medians vs {escape(result.models[0].name)}, {CONFIDENCE:.0%} bootstrap CI "
            f"widened ±{SESSION_RESOLUTION:.0%} for session-to-session variation[/]"
        )
    options = result.models[0].description.get("session_options") if result.models else None
    if options:
        lines.append(f"[dim]session options: {escape(options)}[/]")
    if result.board:
        lines.append(f"Jetson: power mode {result.board['power_mode']}, clocks locked: {result.board['clocks_locked']}")
    return "\n".join(lines)


def _condition_differences(result: BenchResult) -> list[str]:
    """Each further spinning setting against the first, per model and batch: the median over rounds of
    the per-round ratio of process medians (both settings run in every round)."""
    first, *others = result.conditions
    lines = []
    for other in others:
        parts = []
        for model in result.models:
            for batch in result.settings.options.batch_sizes:
                mine, theirs = result.case(model.name, batch, other), result.case(model.name, batch, first)
                assert isinstance(mine, DeployedCase) and isinstance(theirs, DeployedCase)
                parts.append(f"{escape(model.name)} b{batch} {ratio_between(mine, theirs).median_ratio:.2f}")
        lines.append(f"spinning {other} / spinning {first} (latency ratio, median over rounds): " + ", ".join(parts))
    return lines


def _batch_table(result: BenchResult, batch: int, condition: str) -> Table:
    cases = [result.case(model.name, batch, condition) for model in result.models]
    title = f"batch {batch}" + (f" · spinning {condition}" if result.mode == "deployment" else "")
    table = Table(title=Text.from_markup(title), title_justify="left")
    table.add_column("")
    for case in cases:
        table.add_column(Text(case.model), justify="right")
    rows = _deployed_rows() if result.mode == "deployment" else _paired_rows(result)
    for label, cell in rows + _common_rows(result, batch, condition):
        table.add_row(Text.from_markup(label), *(Text.from_markup(cell(case)) for case in cases))
    return table


Row = tuple[str, Callable[[Case], str]]


def _paired_rows(result: BenchResult) -> list[Row]:
    creation = {m.name: m.creation_s for m in result.models}
    rows: list[Row] = [
        (f"latency {stat} (ms)", lambda c, stat=stat: _ms(getattr(c.latency, stat)))
        for stat in ("min", "mean", "median", "p90", "p95", "p99", "max", "std")
    ]
    return rows + [
        ("CV", _cv),
        ("throughput (samples/s)", lambda c: f"{c.throughput:,.1f}"),
        ("runs · measured", lambda c: f"{c.timing.runs} · {c.timing.measured_s:.2f} s"),
        ("session creation (ms)", lambda c: _ms(creation[c.model] * 1e3)),
        ("first inference (ms)", lambda c: _ms(c.timing.first_call_s * 1e3)),
    ]


def _deployed_rows() -> list[Row]:
    return [
        ("latency: median of process medians (ms)", lambda c: _ms(c.median_ms)),
        ("process medians: min – max (ms)", _process_range),
        ("modes across processes", _modes),
        *[(f"pooled {stat} (ms)", lambda c, stat=stat: _ms(getattr(c.latency, stat))) for stat in ("p90", "p99", "max")],
        ("CV within a process (median)", _within_cv),
        ("throughput (samples/s)", lambda c: f"{c.throughput:,.1f}"),
        ("processes · runs · measured", lambda c: f"{len(c.processes)} · {c.runs} · {c.measured_s:.2f} s"),
        ("session creation (ms, median)", lambda c: _ms(c.creation_s * 1e3)),
        ("first inference (ms, median)", lambda c: _ms(c.first_call_s * 1e3)),
    ]


def _common_rows(result: BenchResult, batch: int, condition: str) -> list[Row]:
    rows: list[Row] = []
    if any(c.device_latency for c in result.cases):
        rows.append(("device median (ms)", lambda c: _ms(c.device_latency.median) if c.device_latency else "–"))
    if any(c.memory for c in result.cases):
        rows.append(("peak RSS (MB, +over baseline)", _memory))
    if any(c.roofline for c in result.cases):
        rows.append(("GMAC/s (efficiency)", _roofline))
    if any(c.jetson for c in result.cases):
        rows.append(("energy/inference (mJ, sensor est.)", _energy))
    if len(result.models) > 1:
        rows.append((f"median ratio vs {escape(result.models[0].name)} (CI)", lambda c: _ratio(result, c, batch, condition)))
    return rows


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 1000 else f"{value:,.0f}"


def _cv(case: Case) -> str:
    return _flag_cv(case.latency.cv)


def _within_cv(case: Case) -> str:
    assert isinstance(case, DeployedCase)
    return _flag_cv(case.within_process_cv)


def _flag_cv(cv: float) -> str:
    return f"[red]{cv:.1%} unstable (>{CV_UNSTABLE:.0%})[/]" if cv > CV_UNSTABLE else f"{cv:.1%}"


def _process_range(case: Case) -> str:
    assert isinstance(case, DeployedCase)
    return f"{_ms(min(case.process_medians_ms))} – {_ms(max(case.process_medians_ms))}"


def _modes(case: Case) -> str:
    assert isinstance(case, DeployedCase)
    finding = case.finding
    return f"[yellow]{escape(finding)}[/]" if finding else "one"


def _memory(case: Case) -> str:
    if not case.memory:
        return "–"
    return f"{case.memory['peak_rss_mb']:.0f} (+{case.memory['peak_over_baseline_mb']:.0f})"


def _roofline(case: Case) -> str:
    if not case.roofline:
        return "–"
    share = case.roofline["efficiency"]
    return f"{case.roofline['gmacs_per_s']:.1f}" + (f" ({share:.0%})" if share is not None else "")


def _energy(case: Case) -> str:
    energy = (case.jetson or {}).get("energy_per_inference_mj")
    return f"{energy:.2f}" if energy is not None else "–"


def _ratio(result: BenchResult, case: Case, batch: int, condition: str) -> str:
    if case.model == result.models[0].name:
        return "1 (reference)"
    ratio = result.ratio(case.model, batch, condition)
    text = f"{ratio.median_ratio:.3f} [{ratio.ci_low:.3f}, {ratio.ci_high:.3f}]"
    return text + (f" {ratio.coverage:.1%}" if isinstance(ratio, RoundRatio) else "")


def _profile_table(case: Case) -> Table:
    table = Table(title=Text(f"{case.model} · batch {case.batch} · slowest nodes"), title_justify="left")
    for column in ("node", "op", "mean (ms/run)", "share"):
        table.add_column(column, justify="right" if column in ("mean (ms/run)", "share") else "left")
    for op in case.profile or ():
        table.add_row(Text(op.node), op.op_type, f"{op.mean_ms:.3f}", f"{op.share:.1%}")
    return table
