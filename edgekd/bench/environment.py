"""The machine a number was measured on: CPU model and the ISA extensions that decide which
kernels run (AVX2, AVX-512, VNNI, AMX on x86; NEON dot-product, i8mm, SVE on ARM), cores,
library versions, CUDA and GPU. Computed once per process; every report reuses it."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

# /proc/cpuinfo flag names (x86 "flags", ARM "Features") that change which kernels a runtime picks.
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)  # fmt: skip
PACKAGES = ("edgekd", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "tensorrt", "numpy")


@cache
def environment() -> dict[str, Any]:
    """A JSON-able fingerprint of this machine and software stack."""
    cpuinfo = _read_cpuinfo()
    return {
        "cpu": {
            "model": _cpu_model(cpuinfo),
            "architecture": platform.machine(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
            "isa": [flag for flag in ISA_FLAGS if flag in _flags(cpuinfo)],
        },
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: found for name in PACKAGES if (found := _version(name))},
        **_cuda(),
        "device_model": _device_model(),
    }


def user_cache_dir() -> Path:
    """~/.cache/edgekd (or $XDG_CACHE_HOME/edgekd): measured peaks, TensorRT engines."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekd"


def cpu_model() -> str:
    return environment()["cpu"]["model"]


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpuinfo_field(cpuinfo: str, key: str) -> str | None:
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def _cpu_model(cpuinfo: str) -> str:
    # x86 names the model; ARM kernels often give only "Hardware" or implementer/part codes.
    for key in ("model name", "Hardware", "Model"):
        if value := _cpuinfo_field(cpuinfo, key):
            return value
    part = _cpuinfo_field(cpuinfo, "CPU part")
    return f"ARM CPU part {part}" if part else platform.processor() or platform.machine()


def _flags(cpuinfo: str) -> set[str]:
    return set((_cpuinfo_field(cpuinfo, "flags") or _cpuinfo_field(cpuinfo, "Features") or "").split())


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cuda() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cuda": None, "gpu": None}
    available = torch.cuda.is_available()
    return {"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if available else None}


def _device_model() -> str | None:
    """The board name on Jetson and other device-tree systems (e.g. 'NVIDIA Jetson AGX Orin')."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
    except OSError:
        return None
