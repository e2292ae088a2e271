"""Quality gates: pass/fail verdicts on a run's report.json, for recipes and CI.

Two kinds of threshold:

* `GatesConfig` (the recipe's `gates:` block, or `edgekd gate --min-accuracy …`): absolute
  limits on this run — accuracy, accuracy drop vs the teacher, deployed size, speedup vs the
  teacher, and (on a pinned device only) absolute latency.
* `BaselineLimits` (`edgekd gate --baseline main/report.json …`): how far this run may regress
  from a reference run — accuracy points lost, size growth, speedup lost.

Latency comparisons use ratios measured side by side in one process (`latency.speedup`), never
milliseconds from two different machines; only `max_latency_ms` reads absolute time.

>>> from edgekd.records import Report
>>> report = Report.from_json({
...     "name": "demo", "teacher": {"model": "cnn", "accuracy": 0.97, "macs": 9, "params": 9, "size_bytes": 36},
...     "student": {"model": "cnn", "accuracy": 0.955, "macs": 5, "params": 5, "size_bytes": 20}})
>>> [r.passed for r in evaluate_gates(report, GatesConfig(min_accuracy=0.9, max_accuracy_drop=1))]
[True, False]
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import Field, ValidationError

from edgekd.config import StrictModel
from edgekd.errors import InputError, read_mapping_file

REPORT_SCHEMA = "edgekd.report/1"
BYTES_PER_MB = 1_000_000  # decimal megabytes, as storage and flash sizes are quoted


class GatesConfig(StrictModel):
    """The recipe's `gates:` block. Every gate is optional; an unset gate is not evaluated.

    Accuracy gates read the deployed artefact's ONNX Runtime accuracy (int8 ONNX, else fp32 ONNX,
    else the PyTorch student); size gates read that artefact's file size."""

    min_accuracy: float | None = Field(None, ge=0, le=1, description="Lowest accepted accuracy, a fraction (0.9 = 90%).")
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="Most accuracy the student may lose vs the teacher, in percentage points (0.5 = 0.5%)."
    )
    max_size_mb: float | None = Field(None, gt=0, description="Largest accepted deployed file, in MB (10^6 bytes).")
    min_speedup: float | None = Field(None, gt=0, description="Lowest accepted teacher/student median latency ratio.")
    speedup_batch: int | None = Field(None, ge=1, description="Batch size the speedup gates read; default: the largest benchmarked.")
    max_latency_ms: float | None = Field(
        None, gt=0, description="Highest accepted median latency of the deployed model. Absolute time: meaningful only on a pinned device."
    )
    latency_batch: int | None = Field(None, ge=1, description="Batch size for max_latency_ms; default: the smallest benchmarked (per-request latency).")

    def has_thresholds(self) -> bool:
        return any(getattr(self, name) is not None for name in _CHECKS)


@dataclass(frozen=True)
class BaselineLimits:
    """How far a run may regress from a baseline run's report.

    `max_accuracy_drop` in percentage points; `max_size_growth` and `max_speedup_drop` as
    fractions (0.05 = 5%; `parse_fraction("5%")` reads the CLI form)."""

    max_accuracy_drop: float | None = None
    max_size_growth: float | None = None
    max_speedup_drop: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise InputError(f"baseline limit {name} must be a number ≥ 0 (got {value!r})")

    def has_thresholds(self) -> bool:
        return any(value is not None for value in asdict(self).values())


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict. `measured` and `threshold` are in `unit`: fraction (0–1), points, MB, x, ms.
    `measured` is None when the report lacks what the gate reads (then the gate fails)."""

    name: str
    measured: float | None
    threshold: float
    passed: bool
    reason: str
    unit: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateResult:
        return cls(**data)

    @property
    def is_lower_bound(self) -> bool:
        return _is_lower_bound(self.name)


def _is_lower_bound(gate_name: str) -> bool:
    """min_… gates pass at or above the threshold; max_… gates at or below it."""
    return gate_name.rpartition(".")[2].startswith("min_")


def parse_fraction(text: str) -> float:
    """`"5%"` → 0.05; `"0.05"` → 0.05. A bare number above 1 is refused as ambiguous."""
    stripped = text.strip()
    try:
        if stripped.endswith("%"):
            return float(stripped[:-1]) / 100
        value = float(stripped)
    except ValueError:
        raise ValueError(f"{text!r} is not a percentage like 5% or a fraction like 0.05") from None
    if value > 1:
        raise ValueError(f"{text!r} is ambiguous: write {value:g}% or {value / 100:g}")
    return value


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    formats = {"fraction": f"{value:.2%}", "points": f"{value:.2f} points", "MB": f"{value:.3f} MB", "x": f"{value:.2f}×", "ms": f"{value:.3f} ms"}
    return formats[unit]


# ---------------------------------------------------------------- reading the report


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report.json; InputError (exit 2) for a missing file, bad JSON, another schema or an unfinished run."""
    report = read_mapping_file(path, "report file", json.loads, (json.JSONDecodeError,), "JSON")
    found = report.get("schema")
    if found != REPORT_SCHEMA:
        raise InputError(f"report file {str(path)!r} has schema {found!r}; expected {REPORT_SCHEMA!r}")
    if "student" not in report:
        raise InputError(f"report file {str(path)!r} has no student: the run did not finish")
    return report


def stored_gates_config(report: dict[str, Any], source: str = "report") -> GatesConfig | None:
    """The recipe gates the runner stored in the report (`gates_config`), if any."""
    raw = report.get("gates_config")
    if raw is None:
        return None
    try:
        return GatesConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"{source}: gates_config is not valid: {exc}") from None


@dataclass(frozen=True)
class Deployed:
    """The artefact that ships: the int8 ONNX file if exported, else the fp32 one, else the PyTorch student."""

    label: str
    accuracy: float
    size_bytes: int
    latency_key: str  # its model key in report["latency"]["models"]
    onnx_kind: str | None  # "int8", "fp32", or None for the PyTorch student


def deployed_artefact(report: dict[str, Any]) -> Deployed:
    student = report["student"]
    onnx = student.get("onnx", {})
    kind = next((k for k in ("int8", "fp32") if k in onnx), None)
    if kind is None:
        return Deployed("student (PyTorch)", student["accuracy"], student["size_bytes"], "student", None)
    entry = onnx[kind]
    name = Path(entry["path"]).name
    measured = entry.get("accuracy")
    # An export that skipped its ONNX evaluation falls back to the PyTorch number, and says so.
    label = name if measured is not None else f"{name} (PyTorch accuracy)"
    accuracy = measured if measured is not None else student["accuracy"]
    return Deployed(label, accuracy, entry["size_bytes"], name.removesuffix(".onnx"), kind)


def _pick_batch(available: Iterable[str], requested: int | None, default: Callable[[list[int]], int]) -> str | None:
    batches = sorted(int(b) for b in available)
    if requested is not None:
        return str(requested) if requested in batches else None
    return str(default(batches)) if batches else None


def _batches_text(available: Iterable[str]) -> str:
    return ", ".join(sorted(available, key=int)) or "none"


# ---------------------------------------------------------------- the gates


def _passes(measured: float, threshold: float, lower_bound: bool) -> bool:
    slack = 1e-9 * max(1.0, abs(threshold))  # 0.96 - 0.955 is 0.5000000000000004 points, not a failure
    return measured >= threshold - slack if lower_bound else measured <= threshold + slack


def _verdict(name: str, measured: float, threshold: float, unit: str, what: str) -> GateResult:
    lower_bound = _is_lower_bound(name)
    passed = _passes(measured, threshold, lower_bound)
    shown, limit = format_value(measured, unit), format_value(threshold, unit)
    if passed:
        reason = f"{what}: {shown} {'≥' if lower_bound else '≤'} {limit}"
    else:
        reason = f"{what}: {shown}, {'below the minimum' if lower_bound else 'above the maximum'} {limit}"
    return GateResult(name, measured, threshold, passed, reason, unit)


def _unmeasurable(name: str, threshold: float, unit: str, reason: str) -> GateResult:
    return GateResult(name, None, threshold, False, reason, unit)


def _min_accuracy(report: dict[str, Any], config: GatesConfig) -> GateResult:
    deployed = deployed_artefact(report)
    return _verdict("min_accuracy", deployed.accuracy, config.min_accuracy, "fraction", f"{deployed.label} accuracy")


def _max_accuracy_drop(report: dict[str, Any], config: GatesConfig) -> GateResult:
    deployed = deployed_artefact(report)
    teacher = report["teacher"]["accuracy"]
    drop = (teacher - deployed.accuracy) * 100
    what = f"{deployed.label} {deployed.accuracy:.2%} vs teacher {teacher:.2%}, drop"
    return _verdict("max_accuracy_drop", drop, config.max_accuracy_drop, "points", what)


def _max_size_mb(report: dict[str, Any], config: GatesConfig) -> GateResult:
    deployed = deployed_artefact(report)
    return _verdict("max_size_mb", deployed.size_bytes / BYTES_PER_MB, config.max_size_mb, "MB", f"{deployed.label} size")


def _speedup(report: dict[str, Any], batch: str) -> dict[str, Any] | None:
    return report.get("latency", {}).get("speedup", {}).get(batch)


def _speedup_batch(report: dict[str, Any], config: GatesConfig) -> str | None:
    return _pick_batch(report.get("latency", {}).get("speedup", {}), config.speedup_batch, max)


def _no_speedup(report: dict[str, Any], config: GatesConfig) -> str:
    speedups = report.get("latency", {}).get("speedup", {})
    if not speedups:
        return "the report has no latency.speedup (no bench stage ran)"
    return f"no speedup measured at batch {config.speedup_batch} (measured batches: {_batches_text(speedups)})"


def _min_speedup(report: dict[str, Any], config: GatesConfig) -> GateResult:
    batch = _speedup_batch(report, config)
    if batch is None:
        return _unmeasurable("min_speedup", config.min_speedup, "x", _no_speedup(report, config))
    speedup = _speedup(report, batch)
    low, high = speedup["ci"]
    what = f"speedup vs teacher at batch {batch} (95% CI {low:.2f}–{high:.2f})"
    return _verdict("min_speedup", speedup["ratio"], config.min_speedup, "x", what)


def _max_latency_ms(report: dict[str, Any], config: GatesConfig) -> GateResult:
    name, threshold = "max_latency_ms", config.max_latency_ms
    latency = report.get("latency")
    if not latency:
        return _unmeasurable(name, threshold, "ms", "the report has no latency (no bench stage ran)")
    deployed = deployed_artefact(report)
    per_batch = latency["models"].get(deployed.latency_key)
    if per_batch is None:
        return _unmeasurable(name, threshold, "ms", f"{deployed.latency_key} was not benchmarked (models: {', '.join(latency['models'])})")
    batch = _pick_batch(per_batch, config.latency_batch, min)
    if batch is None:
        return _unmeasurable(name, threshold, "ms", f"{deployed.latency_key} has no batch {config.latency_batch} (measured: {_batches_text(per_batch)})")
    what = f"absolute latency, pinned device only ({latency.get('device', 'unknown device')}): {deployed.latency_key} median at batch {batch}"
    return _verdict(name, per_batch[batch]["median_ms"], threshold, "ms", what)


_CHECKS: dict[str, Callable[[dict[str, Any], GatesConfig], GateResult]] = {
    "min_accuracy": _min_accuracy,
    "max_accuracy_drop": _max_accuracy_drop,
    "max_size_mb": _max_size_mb,
    "min_speedup": _min_speedup,
    "max_latency_ms": _max_latency_ms,
}


def _baseline_accuracy(report: dict[str, Any], baseline: dict[str, Any], limit: float, config: GatesConfig) -> GateResult:
    now, before = deployed_artefact(report), deployed_artefact(baseline)
    what = f"{now.label} {now.accuracy:.2%} vs baseline {before.label} {before.accuracy:.2%}, drop"
    return _verdict("baseline.max_accuracy_drop", (before.accuracy - now.accuracy) * 100, limit, "points", what)


def _baseline_size(report: dict[str, Any], baseline: dict[str, Any], limit: float, config: GatesConfig) -> GateResult:
    now, before = deployed_artefact(report), deployed_artefact(baseline)
    growth = (now.size_bytes - before.size_bytes) / before.size_bytes
    what = f"{now.label} {now.size_bytes:,} B vs baseline {before.label} {before.size_bytes:,} B, growth"
    return _verdict("baseline.max_size_growth", growth, limit, "fraction", what)


def _baseline_speedup(report: dict[str, Any], baseline: dict[str, Any], limit: float, config: GatesConfig) -> GateResult:
    name = "baseline.max_speedup_drop"
    batch = _speedup_batch(report, config)
    if batch is None:
        return _unmeasurable(name, limit, "fraction", _no_speedup(report, config))
    before = _speedup(baseline, batch)
    if before is None:
        return _unmeasurable(name, limit, "fraction", f"the baseline has no speedup at batch {batch}")
    now = _speedup(report, batch)["ratio"]
    what = f"speedup {now:.2f}× at batch {batch} vs baseline {before['ratio']:.2f}×, drop"
    return _verdict(name, (before["ratio"] - now) / before["ratio"], limit, "fraction", what)


_BASELINE_CHECKS: dict[str, Callable[[dict[str, Any], dict[str, Any], float, GatesConfig], GateResult]] = {
    "max_accuracy_drop": _baseline_accuracy,
    "max_size_growth": _baseline_size,
    "max_speedup_drop": _baseline_speedup,
}


def evaluate_gates(
    report: dict[str, Any],
    config: GatesConfig,
    baseline: dict[str, Any] | None = None,
    baseline_limits: BaselineLimits | None = None,
) -> list[GateResult]:
    """One GateResult per set threshold: the config's gates, then the baseline comparisons."""
    if baseline_limits is not None and baseline_limits.has_thresholds() and baseline is None:
        raise InputError("baseline limits need a baseline report to compare against")
    results = [check(report, config) for name, check in _CHECKS.items() if getattr(config, name) is not None]
    if baseline is not None and baseline_limits is not None:
        for name, compare in _BASELINE_CHECKS.items():
            limit = getattr(baseline_limits, name)
            if limit is not None:
                results.append(compare(report, baseline, limit, config))
    return results
