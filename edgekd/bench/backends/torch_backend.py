"""Eager PyTorch, the baseline for "what did export buy me". Python API only: it takes an
`nn.Module` (the CLI takes ONNX files). The module runs where its parameters are; on CUDA
each call synchronizes and CUDA events give the device time of the forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.bench.backends.base import Backend, BackendOptions, Runner, backends
from edgekd.bench.timing import Target
from edgekd.errors import InputError


class CudaEventLog:
    """Device time of each call, from a CUDA event pair recorded around it; read after the block."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Any, Any]] = []

    def pair(self) -> tuple[Any, Any]:
        import torch

        events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.pairs.append(events)
        return events

    def drain_ms(self) -> list[float]:
        times = [start.elapsed_time(end) for start, end in self.pairs]
        self.pairs.clear()
        return times


class TorchRunner(Runner):
    def __init__(self, module: Any, options: BackendOptions):
        import torch

        self.torch = torch
        self.module = module.eval()
        self.device = next((p.device for p in module.parameters()), torch.device("cpu"))
        self.threads_before = torch.get_num_threads()
        if options.threads:
            torch.set_num_threads(options.threads)  # process-wide; restored by close()
        self.events = CudaEventLog()

    def bind(self, inputs: dict[str, np.ndarray]) -> Target:
        torch, module = self.torch, self.module
        tensors = [torch.from_numpy(array).to(self.device) for array in inputs.values()]
        if self.device.type != "cuda":

            def call() -> object:
                with torch.inference_mode():
                    return module(*tensors)

            return Target(call)

        def call_cuda() -> object:
            start, end = self.events.pair()
            with torch.inference_mode():
                start.record()
                outputs = module(*tensors)
                end.record()
            torch.cuda.synchronize(self.device)
            return outputs

        return Target(call_cuda, self.events.drain_ms)

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": f"torch {self.torch.__version__} (eager, inference_mode)",
            "module": type(self.module).__name__,
            "device": str(self.device),
            "intra_op_threads": self.torch.get_num_threads(),
        }

    def close(self) -> None:
        self.torch.set_num_threads(self.threads_before)


@backends.register(name="torch")
class TorchBackend(Backend):
    reads_onnx = False
    name = "torch"

    def load(self, model: Any, options: BackendOptions) -> Runner:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise InputError(
                f"the torch backend benches an nn.Module passed to edgekd.bench.benchmark(); got {model!r}. "
                "From the command line, bench ONNX files with --backend onnxruntime"
            )
        return TorchRunner(model, options)
