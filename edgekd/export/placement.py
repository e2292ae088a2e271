"""Which int8 file to ship when the profile leaves a choice: the image stem in int8 or float.

A float stem conv (1–3 input channels) runs faster than ONNX Runtime's int8 one, but it adds
layout changes around it that an all-int8 graph (what `quantize_static` makes) does not have:
an NCHWc reorder after the float conv and, before a residual Add, a Transpose pair. Which costs
more depends on the model and on the machine's state, so with `stem: auto` the export writes
both files and times them in deployment mode (each alone in a fresh process per round, ONNX
Runtime's default session options, the teacher in the rotation so every process may start in
the state a heavy neighbour leaves behind). The float stem ships only if it was faster in every
round at every batch size; otherwise the int8 stem, whose graph has the layout of
`quantize_static`'s. The choice and the timings go into the report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from edgekd.bench import benchmark
from edgekd.bench.deployment import ratio_between
from edgekd.bench.result import DeployedCase
from edgekd.export.runtime import layout_changes
from edgekd.config import StrictModel
from edgekd.records import StemPlacement, StemTimingCell

RULE = "float stem only if faster than the int8 stem in every round, at every batch size and spinning setting (deployment mode)"


class StemTiming(StrictModel):
    """How `stem: auto` times the two candidate files."""

    rounds: int = Field(4, ge=2)
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 64], min_length=1)
    threads: int | None = Field(None, ge=1)
    spinning: list[Literal["on", "off", "stop"]] = Field(default_factory=lambda: ["on"], min_length=1)
    warmup_s: float = Field(0.2, ge=0)
    min_duration_s: float = Field(0.3, gt=0)
    with_teacher: bool = True


def choose_stem(files: Mapping[str, Path], teacher: Path | None, timing: StemTiming) -> StemPlacement:
    """The stem to ship, "int8" or "float", with the timings of `files` {"int8": …, "float": …} that chose it."""
    rotation = ([teacher] if teacher and timing.with_teacher else []) + [files["int8"], files["float"]]
    result = benchmark(
        rotation, rounds=timing.rounds, batch_sizes=tuple(timing.batch_sizes), threads=timing.threads,
        spinning=timing.spinning, warmup_s=timing.warmup_s, min_duration_s=timing.min_duration_s, memory=False,
        roofline=False,
    )  # fmt: skip
    int8_name, float_name = (model.name for model in result.models[-2:])
    cells = {}
    for condition in result.conditions:
        for batch in timing.batch_sizes:
            int8, float_ = (result.case(name, batch, condition) for name in (int8_name, float_name))
            assert isinstance(int8, DeployedCase) and isinstance(float_, DeployedCase)
            cells[f"spinning {condition}, batch {batch}"] = StemTimingCell(
                int8_ms=int8.median_ms, float_ms=float_.median_ms, float_vs_int8=ratio_between(float_, int8).to_json()
            )
    float_wins = all(cell.float_vs_int8["ci_high"] < 1 for cell in cells.values())
    return StemPlacement(
        choice="float" if float_wins else "int8", rule=RULE, mode="deployment", rounds=timing.rounds, threads=timing.threads,
        rotation=[model.name for model in result.models], timings=cells, findings=result.findings,
        layout_changes={kind: layout_changes(path) for kind, path in files.items()},
    )  # fmt: skip
