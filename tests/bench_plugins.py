"""A bench backend plugged in as "tests.bench_plugins:SleepyBackend" (the way users plug in their
own): ONNX Runtime, but every second process that loads a model sleeps after each inference —
a deployed process that lands in a slow mode, made on purpose. The count lives in the file named
by $EDGEKD_TEST_SLEEPY_COUNT, shared by every process of a bench run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edgekd.bench.backends import BackendOptions, Runner
from edgekd.bench.backends.onnxruntime_backend import OnnxRuntimeBackend
from edgekd.bench.timing import Target

SLEEP_S = 0.002


class SleepyRunner(Runner):
    def __init__(self, inner: Runner, slow: bool):
        self.inner, self.slow = inner, slow
        self.input_specs = inner.input_specs

    def bind(self, inputs: dict[str, Any]) -> Target:
        call = self.inner.bind(inputs).call
        if not self.slow:
            return Target(call)

        def slow_call() -> object:
            out = call()
            time.sleep(SLEEP_S)
            return out

        return Target(slow_call)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "slow": self.slow}

    def close(self) -> None:
        self.inner.close()


class SleepyBackend(OnnxRuntimeBackend):
    name = "sleepy"

    def load(self, model: Any, options: BackendOptions) -> Runner:
        counter = Path(os.environ["EDGEKD_TEST_SLEEPY_COUNT"])
        count = int(counter.read_text() or 0) + 1 if counter.exists() else 1
        counter.write_text(str(count))
        return SleepyRunner(super().load(model, options), slow=count % 2 == 0)
