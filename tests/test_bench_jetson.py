"""tegrastats, nvpmodel and jetson_clocks output from several Jetson generations."""

import os
import stat
import time

import pytest

from edgekd.bench import jetson

NANO = (
    "RAM 2299/3964MB (lfb 25x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [3%@102,2%@102,1%@102,1%@102] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@19.5C CPU@21.5C "
    "PMIC@100C GPU@21C AO@28.5C thermal@21.25C POM_5V_IN 2192/2192 POM_5V_GPU 0/0 POM_5V_CPU 442/442"
)
TX2 = (
    "RAM 1600/7854MB (lfb 1088x4MB) SWAP 0/3927MB (cached 0MB) CPU [1%@345,off,off,0%@345,0%@345,0%@345] "
    "EMC_FREQ 0%@1866 GR3D_FREQ 12%@114 APE 150 PLL@36.5C MCPU@36.5C PMIC@100C Tboard@32C GPU@34.5C "
    "BCPU@36.5C thermal@35.6C Tdiode@33.25C VDD_SYS_GPU 152/152 VDD_SYS_SOC 687/687 VDD_4V0_WIFI 0/0 "
    "VDD_IN 3127/3127 VDD_SYS_CPU 152/152 VDD_SYS_DDR 1082/1082"
)
AGX_XAVIER = (
    "RAM 2153/15692MB (lfb 3053x4MB) SWAP 0/7846MB (cached 0MB) CPU [2%@1190,1%@1190,0%@1190,0%@1190,off,off,off,off] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 99%@1377 APE 150 MTS fg 0% bg 0% AO@35C GPU@35.5C Tdiode@38.75C PMIC@100C "
    "AUX@34.5C CPU@36C thermal@35.35C Tboard@36C GPU 0/0 CPU 621/621 SOC 1553/1553 CV 0/0 VDDRQ 310/310 SYS5V 2263/2263"
)
XAVIER_NX = (
    "RAM 1941/7765MB (lfb 943x4MB) SWAP 0/3883MB (cached 0MB) CPU [5%@1190,2%@1190,1%@1190,1%@1190,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% AO@36C GPU@36.5C PMIC@100C AUX@35.5C CPU@37.5C thermal@36.3C "
    "VDD_IN 4677/4677 VDD_CPU_GPU_CV 1025/1025 VDD_SOC 1433/1433"
)
AGX_ORIN = (
    "03-14-2023 10:13:53 RAM 3345/30536MB (lfb 6409x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,off,off,off,off] EMC_FREQ 0%@2133 "
    "GR3D_FREQ 45%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@45.875C Tboard@33C SOC2@41.968C Tdiode@34.5C "
    "SOC0@42.031C CV1@-256C GPU@-256C tj@45.875C SOC1@41.343C CV2@-256C VDD_GPU_SOC 2389mW/2389mW "
    "VDD_CPU_CV 398mW/398mW VIN_SYS_5V0 3016mW/3016mW NC 0mW/0mW VDDQ_VDD2_1V8AO 505mW/505mW NC 0mW/0mW"
)
ORIN_NANO = (
    "11-29-2023 13:13:27 RAM 2036/7620MB (lfb 42x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [1%@729,0%@729,0%@729,0%@729,0%@729,0%@729] GR3D_FREQ 0% cpu@49.312C soc2@48.281C soc0@48.343C "
    "gpu@48.875C tj@49.312C soc1@48.218C VDD_IN 4382mW/4382mW VDD_CPU_GPU_CV 483mW/483mW VDD_SOC 1370mW/1370mW"
)


@pytest.mark.parametrize(
    "line, ram, gpu, rails, power, source",
    [
        (NANO, (2299, 3964), (0, 76), {"POM_5V_IN": 2192, "POM_5V_GPU": 0, "POM_5V_CPU": 442}, 2192, "POM_5V_IN rail"),
        (TX2, (1600, 7854), (12, 114), {"VDD_SYS_GPU": 152, "VDD_IN": 3127, "VDD_SYS_DDR": 1082}, 3127, "VDD_IN rail"),
        (AGX_XAVIER, (2153, 15692), (99, 1377), {"GPU": 0, "CPU": 621, "SYS5V": 2263}, 4747, "sum of rails"),
        (XAVIER_NX, (1941, 7765), (0, None), {"VDD_IN": 4677, "VDD_CPU_GPU_CV": 1025, "VDD_SOC": 1433}, 4677, "VDD_IN"),
        (AGX_ORIN, (3345, 30536), (45, 305), {"VDD_GPU_SOC": 2389, "VIN_SYS_5V0": 3016}, 6308, "sum of rails"),
        (ORIN_NANO, (2036, 7620), (0, None), {"VDD_IN": 4382, "VDD_SOC": 1370}, 4382, "VDD_IN rail"),
    ],
    ids=["nano", "tx2", "agx-xavier", "xavier-nx", "agx-orin", "orin-nano"],
)
def test_tegrastats_lines_of_each_generation(line, ram, gpu, rails, power, source):
    sample = jetson.parse_line(line)
    assert (sample.ram_used_mb, sample.ram_total_mb) == ram
    assert (sample.gpu_load_pct, sample.gpu_freq_mhz) == gpu
    assert rails.items() <= sample.rails_mw.items()
    assert not {"RAM", "SWAP", "IRAM", "NC"} & set(sample.rails_mw)  # memory figures and unconnected rails
    module_power, how = sample.module_power_mw()
    assert module_power == power and how.startswith(source)


def test_energy_per_inference_is_mean_power_times_time_over_inferences():
    samples = [jetson.parse_line(ORIN_NANO), jetson.parse_line(ORIN_NANO.replace("VDD_IN 4382mW", "VDD_IN 5382mW"))]
    summary = jetson.summarize(samples, inferences=200, duration_s=2.0, interval_ms=100)
    # Mean 4882 mW over 2 s = 9764 mJ, over 200 inferences = 48.82 mJ each.
    assert summary["energy_per_inference_mj"] == pytest.approx(48.82)
    assert summary["label"] == "on-module sensor estimate" and summary["module_power_source"] == "VDD_IN rail"
    assert summary["ram_used_mb_max"] == 2036 and summary["rails_mw"]["VDD_SOC"] == 1370


def test_lines_without_figures_are_skipped():
    assert jetson.parse_line("tegrastats: permission denied\n") is None


def test_power_mode_and_clock_pinning():
    assert jetson.parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n") == "MAXN (mode 0)"
    assert jetson.parse_nvpmodel("NV Power Mode: 15W\n0") == "15W (mode 0)"
    assert jetson.parse_nvpmodel(None) is None
    free = (
        "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit\nOnline CPUs: 0-11\n"
        "cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=1574400 IdleStates: WFI=1 c7=1\n"
        "cpu11: Online=0 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=115200\n"
        "GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000\n"
        "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=0\n"
        "NV Power Mode: MAXN\n"
    )
    pinned = (
        free.replace("MinFreq=115200 MaxFreq=2201600 CurrentFreq=1574400", "MinFreq=2201600 MaxFreq=2201600")
        .replace("GPU MinFreq=306000000", "GPU MinFreq=1300500000")
        .replace("FreqOverride=0", "FreqOverride=1")
    )
    assert jetson.parse_jetson_clocks(free) is False
    assert jetson.parse_jetson_clocks(pinned) is True  # the offline core does not count
    assert jetson.parse_jetson_clocks("") is None


def test_sampler_reads_a_running_tegrastats(tmp_path, monkeypatch):
    """tegrastats cannot run here: a stand-in on PATH prints real-format lines at the interval asked."""
    script = tmp_path / "tegrastats"
    script.write_text(f'#!/bin/sh\nwhile true; do echo "{ORIN_NANO}"; sleep 0.05; done\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert jetson.available()
    summary = jetson.sample_while_running(lambda: time.sleep(0.001), duration_s=0.3, interval_ms=50)
    assert summary["samples"] >= 2 and summary["inferences"] > 10
    assert summary["module_power_mw"] == 4382
    assert summary["energy_per_inference_mj"] == pytest.approx(4382 * summary["duration_s"] / summary["inferences"])
