"""Peak host memory (RSS) of one model at one batch size, measured in a fresh Python process
per model and batch so that no model's arenas, caches or allocator high-water mark count
towards another's. This pass runs after the timing pass, never during it.

The probe records RSS after imports (baseline), after loading the model, and the peak while
it runs a few inferences (Linux: VmHWM, reset after imports via /proc/self/clear_refs;
elsewhere the process-lifetime ru_maxrss). `peak_over_baseline_mb` is what the model costs:
weights, runtime arenas, inputs and outputs.

`python -m edgekd.bench.memory` reads a probe (JSON, see `probe()`) on stdin and prints
the measurement as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from edgekd.bench.backends.base import BackendOptions
from edgekd.errors import EdgekdError

PROBE_RUNS = 5
PROBE_TIMEOUT_S = 600
MB = 2**20
# The child imports edgekd.bench without running edgekd/__init__.py, which pulls in torch and
# the training stack: the baseline should be the runtime's footprint, not edgekd's.
CHILD = (
    "import sys, types; package = types.ModuleType('edgekd'); package.__path__ = [{package_dir!r}]; "
    "sys.modules['edgekd'] = package; from edgekd.bench.memory import child_main; child_main()"
)


def probe(backend: str, model: Path, options: BackendOptions, batch: int, runs: int = PROBE_RUNS) -> dict[str, Any]:
    """Measure `model` at `batch` in a fresh process; returns the child's measurement."""
    spec = {"backend": backend, "model": str(model), "options": options.to_json(), "batch": batch, "runs": runs}
    command = [sys.executable, "-c", CHILD.format(package_dir=str(Path(__file__).parents[1]))]
    done = subprocess.run(command, input=json.dumps(spec), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    if done.returncode != 0:
        raise EdgekdError(f"memory probe of {model} at batch {batch} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main() -> None:
    from edgekd.bench.backends import backends

    spec = json.load(sys.stdin)
    baseline = psutil.Process().memory_info().rss
    peak_source = "VmHWM, reset after imports" if _reset_peak() else "ru_maxrss since process start"
    options = BackendOptions.from_json(spec["options"])
    runner = backends.get(spec["backend"])().load(spec["model"], options)
    loaded = psutil.Process().memory_info().rss
    target = runner.bind(options.inputs.make(runner.input_specs, spec["batch"], spec["model"]))
    for _ in range(spec["runs"]):
        target.call()
    peak = _peak_rss()
    result = {
        "baseline_rss_mb": baseline / MB,
        "loaded_rss_mb": loaded / MB,
        "peak_rss_mb": peak / MB,
        "peak_over_baseline_mb": (peak - baseline) / MB,
        "peak_source": peak_source,
        "runs": spec["runs"],
    }
    print(json.dumps(result))


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


if __name__ == "__main__":
    child_main()
