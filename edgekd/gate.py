"""Quality gates: pass/fail verdicts on a run's report.json, for recipes and CI.

Two kinds of threshold:

* `GatesConfig` (the recipe's `gates:` block, or `edgekd gate --min-accuracy …`): absolute
  limits on this run — accuracy, accuracy drop vs the teacher, deployed size, speedup vs the
  teacher, and (on a pinned device only) absolute latency.
* `BaselineLimits` (`edgekd gate --baseline main/report.json …`): how far this run may regress
  from a reference run — accuracy points lost, size growth, speedup lost.

Latency comparisons use ratios of teacher and student measured in the same run and on the same
machine (`latency.speedup`, in the bench stage's mode), never milliseconds from two different
machines; only `max_latency_ms` reads absolute time.

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from edgekd.errors import InputError, read_mapping_file
from edgekd.records import (
    REPORT_SCHEMA,
    Deployed,
    GateResult,
    GatesConfig,
    Report,
    Speedup,
    as_report,
    format_value,
    is_lower_bound,
)

BYTES_PER_MB = 1_000_000  # decimal megabytes, as storage and flash sizes are quoted
ReportLike = Report | Mapping[str, Any]  # a Report, or its JSON form


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


# ---------------------------------------------------------------- reading the report


def load_report(path: str | Path) -> Report:
    """Read a report.json; InputError (exit 2) for a missing file, bad JSON, another schema, an unfinished
    run, or a field that is missing, of the wrong type or not a finite number (all listed)."""
    raw = read_mapping_file(path, "report file", json.loads, (json.JSONDecodeError,), "JSON")
    found = raw.get("schema")
    if found != REPORT_SCHEMA:
        raise InputError(f"report file {str(path)!r} has schema {found!r}; expected {REPORT_SCHEMA!r}")
    if "student" not in raw:
        raise InputError(f"report file {str(path)!r} has no student: the run did not finish")
    problems = [f"{where}: not a finite number" for where in _non_finite(raw)]
    try:
        report = Report.model_validate_json(json.dumps(raw), strict=True)  # strict: "0.9" is not a number here
    except ValidationError as exc:
        problems += [f"{'.'.join(str(part) for part in e['loc'])}: {e['msg'].lower()}" for e in exc.errors()]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise InputError(f"report file {str(path)!r} is not a complete edgekd report: {'; '.join(problems[:8])}{more}")
    return report


def _non_finite(value: Any, where: str = "") -> list[str]:
    """Where a JSON value holds NaN or an infinity (Python's json reads them; no edgekd report has them)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _non_finite(item, f"{where}.{key}" if where else str(key))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _non_finite(item, f"{where}[{index}]")]
    return []


def stored_gates_config(report: ReportLike, source: str = "report") -> GatesConfig | None:
    """The recipe gates the runner stored in the report (`gates_config`), if any."""
    if isinstance(report, Report):
        return report.gates_config
    raw = report.get("gates_config")
    if raw is None:
        return None
    try:
        return GatesConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"{source}: gates_config is not valid: {exc}") from None


def deployed_artefact(report: ReportLike) -> Deployed:
    return as_report(report).deployed()


def _pick_batch(available: Iterable[int], requested: int | None, default: Callable[[list[int]], int]) -> int | None:
    batches = sorted(available)
    if requested is not None:
        return requested if requested in batches else None
    return default(batches) if batches else None


def _batches_text(available: Iterable[int]) -> str:
    return ", ".join(str(b) for b in sorted(available)) or "none"


# ---------------------------------------------------------------- the gates


def _passes(measured: float, threshold: float, lower_bound: bool) -> bool:
    slack = 1e-9 * max(1.0, abs(threshold))  # 0.96 - 0.955 is 0.5000000000000004 points, not a failure
    return measured >= threshold - slack if lower_bound else measured <= threshold + slack


def _verdict(name: str, measured: float, threshold: float, unit: str, what: str) -> GateResult:
    lower_bound = is_lower_bound(name)
    passed = _passes(measured, threshold, lower_bound)
    shown, limit = format_value(measured, unit), format_value(threshold, unit)
    if passed:
        reason = f"{what}: {shown} {'≥' if lower_bound else '≤'} {limit}"
    else:
        reason = f"{what}: {shown}, {'below the minimum' if lower_bound else 'above the maximum'} {limit}"
    return GateResult(name=name, measured=measured, threshold=threshold, passed=passed, reason=reason, unit=unit)


def _unmeasurable(name: str, threshold: float, unit: str, reason: str) -> GateResult:
    return GateResult(name=name, measured=None, threshold=threshold, passed=False, reason=reason, unit=unit)


def _min_accuracy(report: Report, threshold: float, config: GatesConfig) -> GateResult:
    deployed = report.deployed()
    return _verdict("min_accuracy", deployed.accuracy, threshold, "fraction", f"{deployed.label} accuracy")


def _max_accuracy_drop(report: Report, threshold: float, config: GatesConfig) -> GateResult:
    deployed = report.deployed()
    teacher = report.teacher.accuracy
    drop = (teacher - deployed.accuracy) * 100
    what = f"{deployed.label} {deployed.accuracy:.2%} vs teacher {teacher:.2%}, drop"
    return _verdict("max_accuracy_drop", drop, threshold, "points", what)


def _max_size_mb(report: Report, threshold: float, config: GatesConfig) -> GateResult:
    deployed = report.deployed()
    return _verdict("max_size_mb", deployed.size_bytes / BYTES_PER_MB, threshold, "MB", f"{deployed.label} size")


def _speedups(report: Report) -> dict[int, Speedup]:
    return report.latency.speedup if report.latency else {}


def _speedup_batch(report: Report, config: GatesConfig) -> int | None:
    return _pick_batch(_speedups(report), config.speedup_batch, max)


def _no_speedup(report: Report, config: GatesConfig) -> str:
    speedups = _speedups(report)
    if not speedups:
        return "the report has no latency.speedup (no bench stage ran)"
    return f"no speedup measured at batch {config.speedup_batch} (measured batches: {_batches_text(speedups)})"


def _min_speedup(report: Report, threshold: float, config: GatesConfig) -> GateResult:
    latency, batch = report.latency, _speedup_batch(report, config)
    if latency is None or batch is None:
        return _unmeasurable("min_speedup", threshold, "x", _no_speedup(report, config))
    speedup = latency.speedup[batch]
    low, high = speedup.ci
    what = f"speedup vs teacher at batch {batch} ({latency.method()}, 95% CI {low:.2f}–{high:.2f})"
    return _verdict("min_speedup", speedup.ratio, threshold, "x", what)


def _max_latency_ms(report: Report, threshold: float, config: GatesConfig) -> GateResult:
    name, latency = "max_latency_ms", report.latency
    if latency is None:
        return _unmeasurable(name, threshold, "ms", "the report has no latency (no bench stage ran)")
    deployed = report.deployed()
    per_batch = latency.models.get(deployed.latency_key)
    if per_batch is None:
        return _unmeasurable(name, threshold, "ms", f"{deployed.latency_key} was not benchmarked (models: {', '.join(latency.models)})")
    batch = _pick_batch(per_batch, config.latency_batch, min)
    if batch is None:
        return _unmeasurable(name, threshold, "ms", f"{deployed.latency_key} has no batch {config.latency_batch} (measured: {_batches_text(per_batch)})")
    what = f"absolute latency, pinned device only ({latency.device or 'unknown device'}): {deployed.latency_key} median at batch {batch}"
    return _verdict(name, per_batch[batch].median_ms, threshold, "ms", what)


# One check per gate of GatesConfig (a test holds the two together).
CHECKS: dict[str, Callable[[Report, float, GatesConfig], GateResult]] = {
    "min_accuracy": _min_accuracy,
    "max_accuracy_drop": _max_accuracy_drop,
    "max_size_mb": _max_size_mb,
    "min_speedup": _min_speedup,
    "max_latency_ms": _max_latency_ms,
}


def _baseline_accuracy(report: Report, baseline: Report, limit: float, config: GatesConfig) -> GateResult:
    now, before = report.deployed(), baseline.deployed()
    what = f"{now.label} {now.accuracy:.2%} vs baseline {before.label} {before.accuracy:.2%}, drop"
    return _verdict("baseline.max_accuracy_drop", (before.accuracy - now.accuracy) * 100, limit, "points", what)


def _baseline_size(report: Report, baseline: Report, limit: float, config: GatesConfig) -> GateResult:
    now, before = report.deployed(), baseline.deployed()
    growth = (now.size_bytes - before.size_bytes) / before.size_bytes
    what = f"{now.label} {now.size_bytes:,} B vs baseline {before.label} {before.size_bytes:,} B, growth"
    return _verdict("baseline.max_size_growth", growth, limit, "fraction", what)


def _baseline_speedup(report: Report, baseline: Report, limit: float, config: GatesConfig) -> GateResult:
    name = "baseline.max_speedup_drop"
    batch = _speedup_batch(report, config)
    if batch is None:
        return _unmeasurable(name, limit, "fraction", _no_speedup(report, config))
    before = _speedups(baseline).get(batch)
    if before is None:
        return _unmeasurable(name, limit, "fraction", f"the baseline has no speedup at batch {batch}")
    now = _speedups(report)[batch].ratio
    what = f"speedup {now:.2f}× at batch {batch} vs baseline {before.ratio:.2f}×, drop"
    return _verdict(name, (before.ratio - now) / before.ratio, limit, "fraction", what)


_BASELINE_CHECKS: dict[str, Callable[[Report, Report, float, GatesConfig], GateResult]] = {
    "max_accuracy_drop": _baseline_accuracy,
    "max_size_growth": _baseline_size,
    "max_speedup_drop": _baseline_speedup,
}


def evaluate_gates(
    report: ReportLike,
    config: GatesConfig,
    baseline: ReportLike | None = None,
    baseline_limits: BaselineLimits | None = None,
) -> list[GateResult]:
    """One GateResult per set threshold: the config's gates, then the baseline comparisons.
    Reports may be Reports or their JSON form."""
    if baseline_limits is not None and baseline_limits.has_thresholds() and baseline is None:
        raise InputError("baseline limits need a baseline report to compare against")
    report = as_report(report)
    results = [CHECKS[name](report, threshold, config) for name, threshold in config.thresholds().items()]
    if baseline is not None and baseline_limits is not None:
        reference = as_report(baseline)
        for name, compare in _BASELINE_CHECKS.items():
            limit = getattr(baseline_limits, name)
            if limit is not None:
                results.append(compare(report, reference, limit, config))
    return results


__all__ = [
    "BaselineLimits", "CHECKS", "GateResult", "GatesConfig", "REPORT_SCHEMA", "deployed_artefact", "evaluate_gates",
    "load_report", "parse_fraction", "stored_gates_config",
]
