"""Jetson power and utilisation while a model runs, read from `tegrastats` in a pass of its
own (never during the timing pass), plus the board's power mode (`nvpmodel -q`) and whether
its clocks are pinned (`jetson_clocks --show`).

Energy per inference = mean module power × pass duration / inferences: an on-module sensor
estimate. Module power is the VDD_IN / POM_5V_IN input rail where the board has one (Nano,
TX1/TX2, Xavier NX, Orin NX/Nano), otherwise the sum of the rails (AGX Xavier, AGX Orin).

tegrastats line formats differ between generations; the parser reads what each line has:
  TX1/Nano  RAM 2299/3964MB (lfb ...) ... GR3D_FREQ 0%@76 ... POM_5V_IN 2192/2192 POM_5V_GPU 0/0
  AGX Xavier  ... GR3D_FREQ 0%@1377 ... GPU 0/0 CPU 621/621 SOC 1553/1553 CV 0/0 VDDRQ 310/310 SYS5V 2263/2263
  Orin  RAM 3345/30536MB ... GR3D_FREQ 0%@[305,305] ... VDD_GPU_SOC 2389mW/2389mW VDD_CPU_CV 398mW/398mW"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

TEGRASTATS = "tegrastats"
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
UNCONNECTED_RAILS = frozenset({"NC"})
LABEL = "on-module sensor estimate"

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
# "NAME current/average", optionally in mW; "RAM 1/2MB" and "IRAM 0/252kB" are not rails.
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_CLOCK = re.compile(r"^(cpu\d+:|GPU|EMC)\b.*?MinFreq=(\d+) MaxFreq=(\d+)")


@dataclass(frozen=True)
class TegraSample:
    ram_used_mb: int | None
    ram_total_mb: int | None
    gpu_load_pct: int | None
    gpu_freq_mhz: int | None
    rails_mw: dict[str, int] = field(default_factory=dict)

    def module_power_mw(self) -> tuple[float, str]:
        """(power, how it was obtained)."""
        for rail in INPUT_RAILS:
            if rail in self.rails_mw:
                return float(self.rails_mw[rail]), f"{rail} rail"
        return float(sum(self.rails_mw.values())), "sum of rails " + "+".join(self.rails_mw)


def parse_line(line: str) -> TegraSample | None:
    """One tegrastats line → its sample; None for lines without RAM or power figures."""
    ram = _RAM.search(line)
    gr3d = _GR3D.search(line)
    rails = {name: int(current) for name, current, _ in _RAIL.findall(line) if name not in UNCONNECTED_RAILS}
    if not ram and not rails:
        return None
    return TegraSample(
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        gpu_load_pct=int(gr3d.group(1)) if gr3d else None,
        gpu_freq_mhz=int(gr3d.group(2)) if gr3d and gr3d.group(2) else None,
        rails_mw=rails,
    )


def available() -> bool:
    return shutil.which(TEGRASTATS) is not None


class TegrastatsSampler:
    """Runs `tegrastats --interval N` while the `with` block runs and keeps its samples."""

    def __init__(self, interval_ms: int = 100):
        self.interval_ms = interval_ms
        self.samples: list[TegraSample] = []
        self._first = threading.Event()

    def __enter__(self) -> TegrastatsSampler:
        command = [TEGRASTATS, "--interval", str(self.interval_ms)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._first.wait(timeout=5)  # start measuring once tegrastats reports
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=5)
        self.reader.join(timeout=5)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            sample = parse_line(line)
            if sample:
                self.samples.append(sample)
                self._first.set()


def sample_while_running(call: Callable[[], object], duration_s: float, interval_ms: int = 100) -> dict[str, Any]:
    """Run `call` back to back for `duration_s` under tegrastats; power, energy, RAM, GPU load."""
    with TegrastatsSampler(interval_ms) as sampler:
        start = time.perf_counter()
        inferences = 0
        while time.perf_counter() - start < duration_s:
            call()
            inferences += 1
        elapsed = time.perf_counter() - start
        count_before_stop = len(sampler.samples)
    return summarize(sampler.samples[:count_before_stop], inferences, elapsed, interval_ms)


def summarize(samples: list[TegraSample], inferences: int, duration_s: float, interval_ms: int) -> dict[str, Any]:
    if not samples:
        return {"label": LABEL, "samples": 0, "error": "tegrastats reported nothing during the pass"}
    powers = [sample.module_power_mw() for sample in samples]
    power_mw = mean(p for p, _ in powers)
    rails = sorted({rail for sample in samples for rail in sample.rails_mw})
    loads = [s.gpu_load_pct for s in samples if s.gpu_load_pct is not None]
    ram = [s.ram_used_mb for s in samples if s.ram_used_mb is not None]
    return {
        "label": LABEL,
        "samples": len(samples),
        "interval_ms": interval_ms,
        "inferences": inferences,
        "duration_s": duration_s,
        "module_power_mw": power_mw,
        "module_power_source": powers[0][1],
        "energy_per_inference_mj": power_mw * duration_s / inferences,  # mW × s = mJ
        "rails_mw": {rail: mean(s.rails_mw[rail] for s in samples if rail in s.rails_mw) for rail in rails},
        "gpu_load_pct": mean(loads) if loads else None,
        "ram_used_mb_max": max(ram) if ram else None,
    }


def board_setup() -> dict[str, Any]:
    """Power mode and clock pinning: both change latency several-fold on a Jetson."""
    return {
        "power_mode": parse_nvpmodel(_output(["nvpmodel", "-q"])),
        "clocks_locked": parse_jetson_clocks(_output(["jetson_clocks", "--show"])),
    }


def parse_nvpmodel(text: str | None) -> str | None:
    """'NV Power Mode: MAXN\\n0' → 'MAXN (mode 0)'."""
    if not text:
        return None
    name = re.search(r"NV Power Mode:\s*(\S+)", text)
    number = re.search(r"^\s*(\d+)\s*$", text, re.MULTILINE)
    if not name:
        return None
    return f"{name.group(1)} (mode {number.group(1)})" if number else name.group(1)


def parse_jetson_clocks(text: str | None) -> bool | None:
    """True when every online CPU core and the GPU run pinned at one frequency (min = max) and
    the memory clock is pinned too (min = max, or FreqOverride=1); None when unknown."""
    if not text:
        return None
    verdicts = []
    for line in text.splitlines():
        clock = _CLOCK.search(line.strip())
        if clock and "Online=0" not in line:
            verdicts.append(clock.group(2) == clock.group(3) or "FreqOverride=1" in line)
    return all(verdicts) if verdicts else None


def _output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
