"""`edgekd report`: report.json → report.md and a self-contained report.html.

Both files are rendered from one list of blocks (headings, text, tables, plots), so they
always say the same thing. The HTML embeds its plots as base64 PNG data URIs and loads
nothing from anywhere; the Markdown links the same PNGs, written to `report_plots/`.
Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend state)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, PercentFormatter

from edgekd.files import real_folder, write_atomic
from edgekd.records import Latency, ModelMetrics, Report, StepRecord, as_report
from edgekd.report.tables import GATE_ALIGN, GATE_HEADERS, gate_rows, markdown_table, markdown_text, verdict_line

PLOT_DIR = "report_plots"
TEACHER_COLOR = "#d4a017"


# ---------------------------------------------------------------- blocks and their two renderings


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2

    def markdown(self) -> str:
        return f"{'#' * self.level} {markdown_text(self.text)}\n"

    def html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Text:
    text: str

    def markdown(self) -> str:
        return f"{markdown_text(self.text)}\n"

    def html(self) -> str:
        return f"<p>{html.escape(self.text)}</p>"


@dataclass(frozen=True)
class TableBlock:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""  # one l/r per column; default: the first left, numbers right
    row_classes: tuple[str, ...] = ()  # CSS class per row (e.g. pass / fail), HTML only

    @property
    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.headers) - 1)

    def markdown(self) -> str:
        return markdown_table(self.headers, self.rows, self.alignment)

    def html(self) -> str:
        styles = ["left" if a == "l" else "right;white-space:nowrap" for a in self.alignment]
        head = "".join(f'<th style="text-align:{style}">{html.escape(h)}</th>' for h, style in zip(self.headers, styles))
        classes = self.row_classes or ("",) * len(self.rows)
        body = "".join(
            f'<tr class="{css}">' + "".join(f'<td style="text-align:{style}">{html.escape(cell)}</td>' for cell, style in zip(row, styles)) + "</tr>"
            for row, css in zip(self.rows, classes)
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Plot:
    filename: str
    caption: str
    png: bytes

    def markdown(self) -> str:
        return f"![{markdown_text(self.caption)}]({PLOT_DIR}/{self.filename})\n"

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        caption = html.escape(self.caption)
        return f'<figure><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


Block = Union[Heading, Text, TableBlock, Plot]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; background: #fff;
       max-width: 1100px; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .35rem .7rem; }
th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.pass td:nth-child(4) { color: #1a7f37; font-weight: 600; }
tr.fail td:nth-child(4) { color: #cf222e; font-weight: 700; }
tr.fail { background: #ffebe9 !important; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; }
figcaption { color: #59636e; font-size: .9rem; }
"""


def to_markdown(blocks: list[Block]) -> str:
    return "\n".join(block.markdown() for block in blocks)


def to_html(blocks: list[Block], title: str) -> str:
    body = "\n".join(block.html() for block in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


# ---------------------------------------------------------------- numbers


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _validation(record: StepRecord) -> str:
    student, teacher = record.val_accuracy, record.teacher_val_accuracy
    if student is None or teacher is None:
        return "–"
    return f"{_pct(student)} / {_pct(teacher)}" + (" (passes the teacher)" if record.passes_teacher else "")


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1024:,.1f} KiB"


def _ratio(before: float, after: float) -> str:
    return f"{before / after:.1f}×" if after else "–"


# ---------------------------------------------------------------- tables


def _overview(report: Report) -> Text:
    data = report.dataset
    facts = ""
    if data is not None:
        sizes = ", ".join(f"{split} {n:,}" for split, n in data.sizes.items())
        shape = "×".join(str(d) for d in data.input_shape)
        facts = f" Dataset {data.name}: input {shape}, {data.num_classes or '?'} classes, {sizes}."
    return Text(f"Recipe {report.name} (hash {report.recipe_hash or '–'}), run {report.created or '–'}.{facts}")


def _teacher_cache_text(report: Report) -> Text:
    """What recovery read instead of running the teacher; per token for generation data."""
    cache = report.teacher_cache
    assert cache is not None
    stored = f"{cache.tokens:,} target tokens, {cache.bytes_per_token:g} bytes/token" if cache.tokens is not None else f"{cache.views} view(s)"
    return Text(
        f"Teacher cache: recovery read the teacher's {cache.format} ({', '.join(cache.precision)}) from {cache.folder}: "
        f"{stored}, {_size(cache.bytes)}, built in {cache.build_seconds:g} s."
    )


# How each bench mode timed the models (reports from before deployment mode were paired).
HOW_MEASURED = {
    "deployment": "each model alone in a fresh process per round, the order rotating between rounds; a latency is the "
    "median of the per-process medians, a speedup the median over rounds of each round's ratio",
    "paired": "all models measured side by side in one process, interleaved, so ratios between them are comparable",
}


def _speed_method(latency: Latency) -> str:
    """Which bench mode the speedups come from, and its findings."""
    return f"speed measured in {latency.method()}" + "".join(f"; finding: {finding}" for finding in latency.findings)


def _headline(report: Report) -> Text:
    teacher, student, deployed = report.teacher, report.final_student(), report.deployed()
    parts = [
        f"Deployed artefact {deployed.label}: accuracy {_pct(deployed.accuracy)} "
        f"({(deployed.accuracy - teacher.accuracy) * 100:+.2f} points vs the teacher's {_pct(teacher.accuracy)})",
        f"{_ratio(teacher.macs, student.macs)} fewer MACs",
        f"{_ratio(teacher.params, student.params)} fewer parameters",
        f"{_ratio(teacher.size_bytes, deployed.size_bytes)} smaller",
    ]
    parts += [f"{s.ratio:.2f}× faster at batch {batch} (95% CI {s.ci[0]:.2f}–{s.ci[1]:.2f})" for batch, s in report.speedups()]
    if report.latency is not None and report.speedups():
        parts.append(_speed_method(report.latency))
    return Text("; ".join(parts) + ".")


def _model_row(label: str, entry: ModelMetrics, speedup: str = "") -> tuple[str, ...]:
    return (label, _pct(entry.accuracy), _count(entry.macs), _count(entry.params), _size(entry.size_bytes), speedup)


def _summary_table(report: Report) -> TableBlock:
    """Teacher vs final student; the speedup (measured in the same run, per batch) sits on the deployed artefact's row."""
    teacher, student, deployed = report.teacher, report.final_student(), report.deployed()
    speedup = ", ".join(f"{s.ratio:.2f}× @ batch {batch}" for batch, s in report.speedups())
    reference = "1× (reference)" if speedup else ""
    rows = [
        _model_row(f"teacher {teacher.model}", teacher, reference),
        _model_row(f"student {student.model} (PyTorch)", student, speedup if deployed.onnx_kind is None else ""),
    ]
    for kind, onnx in sorted(student.onnx.items()):
        rows.append((f"ONNX {kind} ({onnx.path})", _pct(onnx.accuracy), "", "", _size(onnx.size_bytes), speedup if kind == deployed.onnx_kind else ""))
    return TableBlock(("model", "accuracy", "MACs", "parameters", "size", "speedup vs teacher"), tuple(rows))


def _steps_table(report: Report) -> TableBlock:
    rows = []
    for record in report.steps:
        stage = f"stages[{record.stage_index}] {record.stage}" + (" (int8)" if record.int8 else "")
        rows.append((
            stage,
            f"{record.step}/{record.steps}",
            _pct(record.accuracy_before_recovery),
            _pct(record.accuracy),
            _validation(record),
            _count(record.macs),
            _count(record.params),
            _size(record.size_bytes),
            f"{record.seconds:.1f}" if record.seconds is not None else "–",
        ))
    headers = ("stage", "step", "accuracy before recovery", "accuracy after", "validation: student / teacher", "MACs", "parameters", "size", "seconds")
    return TableBlock(headers, tuple(rows))


def _latency_table(latency: Latency) -> TableBlock:
    batches = latency.batches()
    rows = tuple(
        (model, *(f"{per_batch[b].median_ms:.3f} / {per_batch[b].p90_ms:.3f}" if b in per_batch else "–" for b in batches))
        for model, per_batch in latency.models.items()
    )
    return TableBlock(("model", *(f"batch {b}: median / p90 ms" for b in batches)), rows)


def _step_by_step_blocks(report: Report) -> list[Block]:
    """Where the rationales came from (and what a teacher's outputs gave), and the label task's exact match."""
    found = report.rationales or {}
    if found.get("source") == "teacher":
        origin = (
            f"The teacher wrote the rationales ({found['generated']} generated, {found['reused']} from the cache): "
            f"{found['unparsed']} outputs did not parse, {found['disagreeing']} labels disagree with the ground truth "
            f"({found['dropped']} dropped); {found['kept']} training inputs kept."
        )
    else:
        origin = f"Rationales from the data, for {found.get('examples', '?')} training inputs."
    rows = [(f"stages[{r.stage_index}] {r.stage}", f"{r.step}/{r.steps}", _pct(r.label_exact_match)) for r in report.steps]
    student = report.student
    rows += [(f"ONNX {kind} ({onnx.path})", "", _pct(onnx.exact_match)) for kind, onnx in sorted(student.onnx.items())] if student else []
    return [
        Text(origin + " Only the label task runs at inference: the label read from each greedy answer to a `predict:` prompt, "
             "against the ground truth (ONNX files: the first export.exact_match_rows test rows, in ONNX Runtime)."),
        TableBlock(("model", "step", "label exact match"), tuple(rows)),
    ]


def _generation_blocks(generation: Mapping[str, Any]) -> list[Block]:
    """The bench stage's generation timings (edgekd.bench.generation JSON): one row per model and batch."""
    cases = generation.get("cases", [])
    speedups = {(s["model"], s["batch"]): s for s in generation.get("speedups", [])}
    reference = generation.get("reference", "teacher")
    shape = f"{cases[0]['prompt_length']}-token prompts, {cases[0]['new_tokens']} new tokens, " if cases else ""
    rows = []
    for case in cases:
        ratio = speedups.get((case["model"], case["batch"]))
        rows.append((
            case["model"], str(case["batch"]), f"{case['first_token_ms']['median']:.2f}", f"{case['tokens_per_s']:.1f}",
            f"{ratio['median_ratio']:.2f}× [{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}]" if ratio else "1.00×",
        ))  # fmt: skip
    return [
        Text(f"Greedy generation in ONNX Runtime (no KV cache: each step re-reads the prefix), {shape}models side by side."),
        TableBlock(("model", "batch", "first token ms (median)", "tokens/s", f"speedup vs {reference}"), tuple(rows)),
    ]


def _gates_blocks(report: Report) -> list[Block]:
    results = report.gates or []
    if not results:
        return []
    rows = tuple(gate_rows(results))
    classes = tuple("pass" if r.passed else "fail" for r in results)
    return [Heading("Gates"), Text(verdict_line(results) + "."), TableBlock(GATE_HEADERS, rows, GATE_ALIGN, classes)]


def _environment(report: Report) -> Text:
    facts = {"edgekd": report.edgekd, **report.environment}
    return Text(", ".join(f"{key} {value}" for key, value in facts.items() if value is not None) + ".")


# ---------------------------------------------------------------- plots


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(panels: int = 1, height: float = 5.0) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(max(8.0, 4.6 * panels), height), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _percent_axis(axes: Axes) -> None:
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axes.grid(alpha=0.3)


def _arrow(axes: Axes, start: tuple[float, float], end: tuple[float, float], color: str) -> None:
    axes.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2, "shrinkA": 6, "shrinkB": 6})


def _trajectory_plot(report: Report) -> Plot:
    """Accuracy vs MACs through every step: compression moves left and down, recovery back up."""
    figure, (axes,) = _new_figure()
    teacher = report.teacher
    stage_names = list(dict.fromkeys(r.stage for r in report.steps))
    colors = {name: f"C{i}" for i, name in enumerate(stage_names)}
    axes.scatter([teacher.macs], [teacher.accuracy], marker="*", s=320, color=TEACHER_COLOR, edgecolor="black", zorder=4)
    previous = (teacher.macs, teacher.accuracy)
    for record in report.steps:
        color = colors[record.stage]
        before = record.accuracy_before_recovery
        if before is not None:
            axes.scatter([record.macs], [before], s=60, facecolor="white", edgecolor=color, linewidth=1.8, zorder=3)
            _arrow(axes, previous, (record.macs, before), color)
            previous = (record.macs, before)
        after = (record.macs, record.accuracy)
        axes.scatter([after[0]], [after[1]], s=60, color=color, edgecolor="black", linewidth=0.6, zorder=3)
        _arrow(axes, previous, after, color)
        previous = after
    macs = [teacher.macs, *(r.macs for r in report.steps)]
    if max(macs) > 10 * min(macs):
        axes.set_xscale("log")
    axes.xaxis.set_major_formatter(EngFormatter())
    legend = [
        Line2D([], [], marker="*", color=TEACHER_COLOR, markeredgecolor="black", markersize=15, linestyle="", label="teacher"),
        Line2D([], [], marker="o", color="grey", markerfacecolor="white", linestyle="", label="before recovery"),
        Line2D([], [], marker="o", color="grey", linestyle="", label="after recovery"),
        *(Line2D([], [], color=colors[name], label=name) for name in stage_names),
    ]
    axes.legend(handles=legend, loc="best", fontsize=9)
    axes.set(xlabel="MACs per sample", ylabel="test accuracy", title="Compression trajectory (arrows in step order)")
    _percent_axis(axes)
    return Plot("trajectory.png", "Accuracy vs MACs across every step: hollow before recovery, filled after.", _png(figure))


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front, best = [], -1.0
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((latency, accuracy))
            best = accuracy
    return front


def _pareto_plot(report: Report, latency: Latency) -> Plot:
    batches = latency.batches()
    figure, panels = _new_figure(len(batches))
    for axes, batch in zip(panels, batches):
        points = []
        for i, (model, per_batch) in enumerate(latency.models.items()):
            accuracy = report.model_accuracy(model)
            if batch not in per_batch or accuracy is None:
                continue
            timing = per_batch[batch]
            teacher = model == "teacher"
            axes.errorbar(
                [timing.median_ms], [accuracy], xerr=[[0], [max(timing.p90_ms - timing.median_ms, 0)]],
                marker="*" if teacher else "o", markersize=16 if teacher else 9, capsize=3, linestyle="",
                color=TEACHER_COLOR if teacher else f"C{i}", markeredgecolor="black", label=model,
            )
            axes.annotate(model, (timing.median_ms, accuracy), textcoords="offset points", xytext=(8, 6), fontsize=9)
            points.append((timing.median_ms, accuracy))
        front = _pareto_front(points)
        axes.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", color="grey", alpha=0.6, zorder=0)
        axes.set(xlabel="median latency (ms), bar to p90", ylabel="accuracy", title=f"batch {batch}")
        axes.margins(x=0.25, y=0.25)
        _percent_axis(axes)
    figure.suptitle(f"Accuracy vs latency ({latency.backend or ''}, {latency.threads or '?'} threads); dashed: Pareto front")
    return Plot("pareto.png", "Accuracy vs median latency for the teacher and each ONNX model, per batch size.", _png(figure))


def _distribution_plot(latency: Latency) -> Plot:
    batches = latency.batches()
    figure, panels = _new_figure(len(batches), height=4.5)
    for axes, batch in zip(panels, batches):
        measured = [(model, per_batch[batch].samples_ms) for model, per_batch in latency.models.items() if batch in per_batch]
        boxes = axes.boxplot([samples for _, samples in measured], patch_artist=True, showfliers=True, flierprops={"markersize": 3, "alpha": 0.5})
        axes.set_xticks(range(1, len(measured) + 1), [model for model, _ in measured], rotation=15)
        for i, patch in enumerate(boxes["boxes"]):
            patch.set(facecolor=TEACHER_COLOR if measured[i][0] == "teacher" else f"C{i}", alpha=0.6)
        axes.set(ylabel="latency (ms)", title=f"batch {batch}")
        axes.grid(alpha=0.3, axis="y")
    figure.suptitle(f"Latency distribution per model, measured interleaved on {latency.device or 'this machine'}")
    return Plot("latency.png", "Distribution of the raw latency samples per model and batch size.", _png(figure))


# ---------------------------------------------------------------- the report


def build_blocks(report: Report | Mapping[str, Any]) -> list[Block]:
    """The report's content, in order; `report` is a finished run's Report or its JSON form."""
    report = as_report(report)
    blocks: list[Block] = [
        Heading(f"edgekd report · {report.name}", 1),
        _overview(report),
        Heading("Summary"),
        _headline(report),
        _summary_table(report),
        Heading("Steps"),
        _steps_table(report),
        _trajectory_plot(report),
    ]
    if report.teacher_cache:
        blocks.append(_teacher_cache_text(report))
    if report.teacher_targets:
        targets = report.teacher_targets
        blocks.append(Text(
            f"Sequence-level KD: {targets.replaced:,} training targets were the teacher's greedy answers ({targets.differing:,} differ "
            f"from the data's), cached in {targets.folder} ({_size(targets.bytes)})."
        ))  # fmt: skip
    latency = report.latency
    if latency:
        blocks += [
            Heading("Latency"),
            Text(
                f"{latency.backend or ''} with {latency.threads or '?'} threads on {latency.device or 'unknown device'}, "
                f"{latency.method()}: {HOW_MEASURED[latency.mode or 'paired']}."
            ),
            _latency_table(latency),
            _pareto_plot(report, latency),
            _distribution_plot(latency),
        ]
    if report.generation:
        blocks += [Heading("Generation"), *_generation_blocks(report.generation)]
    if report.rationales:
        blocks += [Heading("Distilling step by step"), *_step_by_step_blocks(report)]
    blocks += _gates_blocks(report)
    blocks += [Heading("Environment"), _environment(report)]
    return blocks


def write_reports(workdir: Path, report: Report | Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `<workdir>/report.md` (with its plots in `report_plots/`) and a self-contained `<workdir>/report.html`."""
    workdir = Path(workdir)
    report = as_report(report)
    blocks = build_blocks(report)
    plot_dir = real_folder(workdir / PLOT_DIR)
    for plot in (b for b in blocks if isinstance(b, Plot)):
        write_atomic(plot_dir / plot.filename, plot.png)
    markdown_path, html_path = workdir / "report.md", workdir / "report.html"
    write_atomic(markdown_path, to_markdown(blocks))
    write_atomic(html_path, to_html(blocks, f"edgekd report · {report.name}"))
    return markdown_path, html_path
