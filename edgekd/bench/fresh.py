"""Bench jobs that run in a fresh Python process: the peak-memory probes (`edgekd.bench.memory`,
`edgekd.bench.generation`) and deployment-mode timing (`edgekd.bench.deployment`). One mechanism for all.

The parent sends `{"job": name, "spec": {...}}` as JSON on stdin; the child runs the job and
prints its result as one JSON line, or `{"error": ..., "input_error": bool}` when the job
raised an EdgekdError (re-raised in the parent as the same kind, so bad input still exits 2).

The child imports `edgekd.bench` without running edgekd/__init__.py, which pulls in torch and
the training stack: a fresh process should carry the runtime's footprint, not edgekd's, and
start in well under a second. It sees the parent's import path, so a backend plugged in as
"pkg.module:Class" resolves in the child as it did in the parent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError, InputError
from edgekd.registry import load_callable

TIMEOUT_S = 600
PACKAGE_DIR = Path(__file__).parents[1]
CHILD = (
    "import sys, types; package = types.ModuleType('edgekd'); package.__path__ = [{package_dir!r}]; "
    "sys.modules['edgekd'] = package; from edgekd.bench.fresh import child_main; child_main()"
)
# Job name → "module:function(spec) -> dict", imported in the child only.
JOBS = {
    "memory": "edgekd.bench.memory:measure_here",
    "deployment": "edgekd.bench.deployment:time_here",
    "generation-memory": "edgekd.bench.generation:memory_here",
}


def run_fresh(job: str, spec: dict[str, Any], what: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Run `job` on `spec` in a new Python process and return its result; `what` names it in errors."""
    command = [sys.executable, "-c", CHILD.format(package_dir=str(PACKAGE_DIR))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    try:
        done = subprocess.run(
            command, input=json.dumps({"job": job, "spec": spec}), capture_output=True, text=True,
            timeout=timeout_s, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise EdgekdError(f"{what} did not finish within {timeout_s:g} s in its fresh process") from None
    lines = done.stdout.strip().splitlines()
    result = _parse(lines[-1]) if lines else None
    if done.returncode != 0 or result is None:
        raise EdgekdError(f"{what} failed in its fresh process:\n{done.stderr.strip()[-2000:]}")
    if "error" in result:
        raise (InputError if result["input_error"] else EdgekdError)(result["error"])
    return result


def child_main() -> None:
    request = json.load(sys.stdin)
    job = load_callable(JOBS[request["job"]])
    try:
        result = job(request["spec"])
    except EdgekdError as exc:
        result = {"error": str(exc), "input_error": isinstance(exc, InputError)}
    print(json.dumps(result))


def _parse(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
