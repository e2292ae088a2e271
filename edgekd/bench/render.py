"""Rich tables for a BenchResult: one table per batch size (a column per model, the
reference first), then per-node profiles; the header says how the numbers were measured."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgekd.bench.result import CONFIDENCE, SESSION_RESOLUTION, BenchResult, CaseResult
from edgekd.bench.stats import CV_UNSTABLE


def render(result: BenchResult, console: Console) -> None:
    console.print(_header(result))
    for batch in result.settings.options.batch_sizes:
        console.print(_batch_table(result, batch))
    for case in result.cases:
        if case.profile:
            console.print(_profile_table(case))
    for note in result.notes:
        console.print(f"[dim]note: {escape(note)}[/]")


def _header(result: BenchResult) -> str:
    s, env = result.settings, result.environment
    timing = s.timing
    threads = f"{s.options.threads} threads" if s.options.threads else f"default threads ({s.threads_effective})"
    cpu = env["cpu"]
    isa = " ".join(cpu["isa"]) or "no ISA flags read"
    lines = [
        f"[bold]edgekd bench[/] · {s.backend} · {threads} · warm-up {timing.warmup_s:g} s · "
        f"≥{timing.min_iterations} runs and ≥{timing.min_duration_s:g} s per model",
        f"CPU {escape(cpu['model'])} ({cpu['logical_cores']} logical cores; {isa})"
        + (f" · GPU {escape(env['gpu'])}" if env.get("gpu") else ""),
    ]
    if len(result.models) > 1:
        lines.append(
            f"[dim]models interleaved in rotating blocks; thread spinning: {s.options.spinning}; ratios: medians vs "
            f"{escape(result.models[0].name)}, {CONFIDENCE:.0%} bootstrap CI widened ±{SESSION_RESOLUTION:.0%} "
            "for session-to-session variation[/]"
        )
    if result.board:
        lines.append(f"Jetson: power mode {result.board['power_mode']}, clocks locked: {result.board['clocks_locked']}")
    return "\n".join(lines)


def _batch_table(result: BenchResult, batch: int) -> Table:
    cases = [result.case(model.name, batch) for model in result.models]
    table = Table(title=f"batch {batch}", title_justify="left")
    table.add_column("")
    for case in cases:
        table.add_column(escape(case.model), justify="right")
    for label, cell in _rows(result, batch):
        table.add_row(label, *(cell(case) for case in cases))
    return table


Row = tuple[str, Callable[[CaseResult], str]]


def _rows(result: BenchResult, batch: int) -> list[Row]:
    creation = {m.name: m.creation_s for m in result.models}
    rows: list[Row] = [
        (f"latency {stat} (ms)", lambda c, stat=stat: _ms(getattr(c.latency, stat)))
        for stat in ("min", "mean", "median", "p90", "p95", "p99", "max", "std")
    ]
    rows += [
        ("CV", _cv),
        ("throughput (samples/s)", lambda c: f"{c.throughput:,.1f}"),
        ("runs · measured", lambda c: f"{c.timing.runs} · {c.timing.measured_s:.2f} s"),
        ("session creation (ms)", lambda c: _ms(creation[c.model] * 1e3)),
        ("first inference (ms)", lambda c: _ms(c.timing.first_call_s * 1e3)),
    ]
    if any(c.device_latency for c in result.cases):
        rows.append(("device median (ms)", lambda c: _ms(c.device_latency.median) if c.device_latency else "–"))
    if any(c.memory for c in result.cases):
        rows.append(("peak RSS (MB, +over baseline)", _memory))
    if any(c.roofline for c in result.cases):
        rows.append(("GMAC/s (efficiency)", _roofline))
    if any(c.jetson for c in result.cases):
        rows.append(("energy/inference (mJ, sensor est.)", _energy))
    if len(result.models) > 1:
        rows.append((f"median ratio vs {escape(result.models[0].name)} (CI)", lambda c: _ratio(result, c, batch)))
    return rows


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 1000 else f"{value:,.0f}"


def _cv(case: CaseResult) -> str:
    text = f"{case.latency.cv:.1%}"
    return f"[red]{text} unstable (>{CV_UNSTABLE:.0%})[/]" if case.latency.unstable else text


def _memory(case: CaseResult) -> str:
    if not case.memory:
        return "–"
    return f"{case.memory['peak_rss_mb']:.0f} (+{case.memory['peak_over_baseline_mb']:.0f})"


def _roofline(case: CaseResult) -> str:
    if not case.roofline:
        return "–"
    share = case.roofline["efficiency"]
    return f"{case.roofline['gmacs_per_s']:.1f}" + (f" ({share:.0%})" if share is not None else "")


def _energy(case: CaseResult) -> str:
    energy = (case.jetson or {}).get("energy_per_inference_mj")
    return f"{energy:.2f}" if energy is not None else "–"


def _ratio(result: BenchResult, case: CaseResult, batch: int) -> str:
    if case.model == result.models[0].name:
        return "1 (reference)"
    ratio = result.ratio(case.model, batch)
    return f"{ratio.median_ratio:.3f} [{ratio.ci_low:.3f}, {ratio.ci_high:.3f}]"


def _profile_table(case: CaseResult) -> Table:
    table = Table(title=f"{escape(case.model)} · batch {case.batch} · slowest nodes", title_justify="left")
    for column in ("node", "op", "mean (ms/run)", "share"):
        table.add_column(column, justify="right" if column in ("mean (ms/run)", "share") else "left")
    for op in case.profile or ():
        table.add_row(escape(op.node), op.op_type, f"{op.mean_ms:.3f}", f"{op.share:.1%}")
    return table
