"""Peak host memory (RSS) of one model at one batch size, measured in a fresh Python process
per model and batch so that no model's arenas, caches or allocator high-water mark count
towards another's. This pass runs after the timing pass, never during it.

The probe records RSS after imports (baseline), after loading the model, and the peak while
it runs a few inferences (Linux: VmHWM, reset after imports via /proc/self/clear_refs;
elsewhere the process-lifetime ru_maxrss). `peak_over_baseline_mb` is what the model costs:
weights, runtime arenas, inputs and outputs.

The fresh process is `edgekd.bench.fresh`'s, which deployment-mode timing uses too."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psutil

from edgekd.bench.backends.base import BackendOptions, backend_class
from edgekd.bench.fresh import run_fresh

PROBE_RUNS = 5
MB = 2**20


def probe(backend: str, model: Path, options: BackendOptions, batch: int, runs: int = PROBE_RUNS) -> dict[str, Any]:
    """Measure `model` at `batch` in a fresh process; returns the child's measurement."""
    spec = {"backend": backend, "model": str(model), "options": options.to_json(), "batch": batch, "runs": runs}
    return run_fresh("memory", spec, f"memory probe of {model} at batch {batch}")


def measure_here(spec: dict[str, Any]) -> dict[str, Any]:
    """The probe itself, in the fresh process."""
    baseline = psutil.Process().memory_info().rss
    peak_source = "VmHWM, reset after imports" if _reset_peak() else "ru_maxrss since process start"
    options = BackendOptions.from_json(spec["options"])
    runner = backend_class(spec["backend"])().load(spec["model"], options)
    loaded = psutil.Process().memory_info().rss
    target = runner.bind(options.inputs.make(runner.input_specs, spec["batch"], spec["model"]))
    for _ in range(spec["runs"]):
        target.call()
    peak = _peak_rss()
    return {
        "baseline_rss_mb": baseline / MB,
        "loaded_rss_mb": loaded / MB,
        "peak_rss_mb": peak / MB,
        "peak_over_baseline_mb": (peak - baseline) / MB,
        "peak_source": peak_source,
        "runs": spec["runs"],
    }


def _reset_peak() -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) to the current RSS; False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
