"""Where the ort-x86 profile puts Q/DQ, judged where the model is deployed (issue 13).

For each model — the built-ins (cnn, resnet_s, mobilenet_s at their default sizes), the headline
teacher's architecture `resnet_s(depth=8, width=32)` and, when given, the headline's pruned student
with its trained weights — the same float weights become:
  * fp32: the float model (the heavy neighbour of the "loaded" state);
  * quantize_static: ONNX Runtime's own quantizer (QDQ, u8 activations, s8 per-channel weights);
  * edgekd int8 stem: the ort-x86 placement with every conv in int8 (what `export: {stem: int8}` ships);
  * edgekd float stem: the same with the convs on ≤ 3 input channels float (`stem: float`; the only
    rule before issue 13). `stem: auto`, the default, times these two at export and ships the faster.
All quantized files calibrate on the same 8 batches of 64 Fashion-MNIST training images.

`prepare` (run with `cpujob work`) writes the files and counts, in the graph ONNX Runtime actually
runs (SessionOptions.optimized_model_filepath), the layout changes (Transpose, ReorderInput/Output)
and which convs stayed float. `time MODEL` (run with `cpujob timing`, a few minutes per model) times
them in deployment mode — each file alone in a fresh process per round, default session options but
2 intra-op threads, spinning on and off, batch 1 and 64 — in two states: "loaded" (the fp32 model in
the rotation, so every int8 process may start in the state a heavy fp32 neighbour leaves behind) and
"quiet" (the int8 files alone). `report` writes the RESULTS.md section.

    python bench/export_placement.py prepare --student runs/bench-fashion-mnist/kd/checkpoints/stage00-step002.pt
    python bench/export_placement.py time resnet_s     # one model per timing job
    python bench/export_placement.py report
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from common import machine, replace_section, stamp
from edgekd.bench import benchmark
from edgekd.bench.stats import ratio_over_rounds
from edgekd.data import load_data
from edgekd.export.onnx_export import export_onnx
from edgekd.export.runtime import LAYOUT_OPS, optimized_graph, ort_quantize_static
from edgekd.models import build_model
from edgekd.prune.structure import apply_structure
from edgekd.quant.graph import calibrate, float_stem, insert_fake_quant, to_float
from edgekd.quant.profiles import profiles

BUILTINS = {"cnn": "cnn()", "resnet_s": "resnet_s()", "mobilenet_s": "mobilenet_s()", "resnet_s-8-32": "resnet_s(depth=8, width=32)"}
STUDENT = "headline-student"
CALIBRATION_BATCHES, CALIBRATION_BATCH = 8, 64
FILES = {"fp32": "fp32.onnx", "quantize_static": "quantize_static.onnx", "edgekd int8 stem": "int8_stem.onnx", "edgekd float stem": "float_stem.onnx"}
BATCHES = (1, 64)
THREADS = 2


def student_model(checkpoint: Path) -> torch.nn.Module:
    """The pruned student of a run's checkpoint: its architecture from the prune stage's record, then its weights."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    spec = json.loads((checkpoint.parents[1] / "recipe.json").read_text())["teacher"]["model"]
    model = build_model(spec, in_channels=1, num_classes=10)
    apply_structure(model, saved["restores"][-1]["state"]["structure"])
    model.load_state_dict(saved["student"])
    return model.eval()


def prepare(workdir: Path, student: Path | None) -> None:
    data = load_data("fashion-mnist", seed=0)
    loader = data.loader("train", CALIBRATION_BATCH, shuffle=True, seed=0)
    images = [x for x, _ in islice(loader, CALIBRATION_BATCHES)]
    torch.manual_seed(0)
    models = {name: build_model(spec, in_channels=1, num_classes=10).eval() for name, spec in BUILTINS.items()}
    if student:
        models[STUDENT] = student_model(student)
    manifest = {}
    for name, model in models.items():
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        manifest[name] = {"files": {}, "graph": {}}
        profile = profiles.get("ort-x86")
        quantized = insert_fake_quant(model, profile, batches_per_epoch=1)
        calibrate(quantized, images)
        export_onnx(quantized, folder / FILES["edgekd int8 stem"], images[0][:1])
        export_onnx(float_stem(quantized, profile), folder / FILES["edgekd float stem"], images[0][:1])
        # The float weights the int8 files hold (BatchNorm folded), for fp32 and quantize_static.
        export_onnx(to_float(quantized), folder / FILES["fp32"], images[0][:1], exporter="torchscript")
        ort_quantize_static(folder / FILES["fp32"], folder / FILES["quantize_static"], [x.numpy() for x in images])
        for label, file in FILES.items():
            manifest[name]["files"][label] = str(folder / file)
            manifest[name]["graph"][label] = graph_facts(folder / file)
        print(name, json.dumps(manifest[name]["graph"]), flush=True)
    (workdir / "manifest.json").write_text(json.dumps(manifest, indent=1))


def graph_facts(path: Path) -> dict[str, Any]:
    """What ONNX Runtime runs: layout changes, fused integer convs, float convs left."""
    ops = Counter(node.op_type for node in optimized_graph(path).graph.node)
    return {
        "layout": sum(ops[op] for op in LAYOUT_OPS),
        **{op: ops[op] for op in LAYOUT_OPS},
        "QLinearConv": ops["QLinearConv"],
        "float Conv": ops["Conv"] + ops["FusedConv"],
    }


def time_model(workdir: Path, name: str, rounds: int, seconds: float, states: list[str], neighbour: Path | None) -> None:
    """`states`: loaded (the model's fp32 file, or `neighbour`, in the rotation) and/or quiet (the int8 files alone)."""
    files = json.loads((workdir / "manifest.json").read_text())[name]["files"]
    if neighbour:
        files["fp32"] = str(neighbour)
    order = ["quantize_static", "edgekd int8 stem", "edgekd float stem"]
    path = workdir / name / "timing.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    started = time.perf_counter()
    for state, labels in (("loaded", [*order, "fp32"]), ("quiet", order)):
        if state not in states:
            continue
        result = benchmark(
            [files[label] for label in labels], rounds=rounds, batch_sizes=BATCHES, threads=THREADS, spinning="both",
            warmup_s=0.3, min_duration_s=seconds, memory=False, roofline=False,
        )  # fmt: skip
        results[state] = summarize(result, labels)
        results[f"{state} neighbour"] = Path(files["fp32"]).name if state == "loaded" else None
        results[f"{state} load_average"] = result.load_average
        results[f"{state} stamp"] = stamp()
    print(f"timed in {time.perf_counter() - started:.0f} s", flush=True)
    path.write_text(json.dumps(results, indent=1))


def summarize(result: Any, labels: list[str]) -> dict[str, Any]:
    """Per condition and batch: each file's median of process medians, its finding, and its per-round
    ratio to quantize_static (the first file) as median [interval]."""
    names = [model.name for model in result.models]
    out: dict[str, Any] = {}
    for condition in result.conditions:
        for batch in BATCHES:
            cell = out.setdefault(f"spinning {condition}, batch {batch}", {})
            for label, name in zip(labels, names):
                case = result.case(name, batch, condition)
                entry = {"median_ms": case.median_ms, "finding": case.finding, "process_medians_ms": case.process_medians_ms}
                if name != names[0]:
                    ratio = result.ratio(name, batch, condition)
                    entry["vs_quantize_static"] = [ratio.median_ratio, ratio.ci_low, ratio.ci_high, ratio.coverage]
                cell[label] = entry
            if "fp32" in labels:
                fp32 = result.case(names[labels.index("fp32")], batch, condition)
                for label, name in zip(labels[:-1], names):
                    mine = result.case(name, batch, condition)
                    per_round = [f.median_ms(batch) / m.median_ms(batch) for f, m in zip(_rounds(fp32), _rounds(mine))]
                    speedup = ratio_over_rounds(per_round)
                    cell[label]["speedup_vs_fp32"] = [speedup.median_ratio, speedup.ci_low, speedup.ci_high]
    return out


def _rounds(case: Any) -> list[Any]:
    return sorted(case.processes, key=lambda p: p.round)


def report(workdir: Path) -> None:
    manifest = json.loads((workdir / "manifest.json").read_text())
    graph_rows = []
    for name, entry in manifest.items():
        cells = [f"{g['layout']} ({g['Transpose']} T, {g['ReorderInput'] + g['ReorderOutput']} R), {g['float Conv']} float conv" for g in entry["graph"].values()]
        graph_rows.append(f"| {name} | " + " | ".join(cells) + " |")
    timing_rows, states = [], []
    for name in manifest:
        path = workdir / name / "timing.json"
        if not path.is_file():
            continue
        timing = json.loads(path.read_text())
        for state in ("loaded", "quiet"):
            stamp_, load = timing.get(f"{state} stamp", timing.get("stamp")), timing.get(f"{state} load_average", timing.get("load_average"))
            neighbour = timing.get(f"{state} neighbour") or ("fp32.onnx" if state == "loaded" else None)
            states.append(f"{name} {state} {stamp_} (load average {load['before_timing'][0]:.2f} before)")
            for cell, entries in timing[state].items():
                qs = entries["quantize_static"]
                row = [name, f"{state}" + (f" ({neighbour})" if neighbour else ""), cell, _ms(qs)]
                for label in ("edgekd int8 stem", "edgekd float stem"):
                    r = entries[label]["vs_quantize_static"]
                    row.append(f"{_ms(entries[label])} · {r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]")
                row.append(f"{entries['fp32']['median_ms']:.3f}" if "fp32" in entries else "–")
                timing_rows.append("| " + " | ".join(row) + " |")
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "onnx", "onnxruntime"))
    body = f"""Machine: {machine()}. Versions: {versions}. Command: `python bench/export_placement.py prepare|time MODEL|report`,
every timing job alone on the machine (`cpujob timing`): {"; ".join(states)}.

The same float weights (BatchNorm folded) quantized three ways, calibrated on the same {CALIBRATION_BATCHES} batches of
{CALIBRATION_BATCH} Fashion-MNIST training images; built-ins at random initialisation (latency does not depend on the
values), the headline student (`{STUDENT}`) with its trained, pruned weights. `edgekd int8 stem` is what `export:
{{stem: int8}}` ships, `edgekd float stem` what `stem: float` ships (the only placement before issue 13).

Layout changes in the graph ONNX Runtime runs (optimized_model_filepath; T = Transpose, R = ReorderInput/Output):

| model | fp32 | quantize_static | edgekd int8 stem | edgekd float stem |
|---|---|---|---|---|
""" + "\n".join(graph_rows) + """

Deployment mode: each file alone in a fresh process per round, 6 rounds rotating the order, ONNX Runtime's default
session options but 2 intra-op threads, 0.3 s warm-up and ≥ 0.5 s timed per process and batch. "loaded": an fp32
file in the rotation (the model's own, or the headline teacher where named); "quiet": the three int8 files alone.
Cells: median of the per-process medians in ms (the bench's finding in *italics* when processes disagree), then the
median over rounds of the per-round ratio to quantize_static with its interval ([min, max] of 6 rounds: 96.9%);
below 1 is faster than quantize_static.

| model | state | condition | quantize_static ms | edgekd int8 stem | edgekd float stem | neighbour ms |
|---|---|---|---|---|---|---|
""" + "\n".join(timing_rows) + "\n"
    replace_section("ort-x86 Q/DQ placement in deployment mode (issue 13)", body)
    print(body)


def _ms(entry: dict[str, Any]) -> str:
    text = f"{entry['median_ms']:.3f}"
    return text + (f" *{entry['finding']}*" if entry["finding"] else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("prepare", "time", "report"))
    parser.add_argument("model", nargs="?", help="for `time`: a model name from the manifest")
    parser.add_argument("--workdir", type=Path, default=Path("runs/export-placement"))
    parser.add_argument("--student", type=Path, help="a run checkpoint of the pruned headline student")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per process and batch size")
    parser.add_argument("--states", default="loaded,quiet", help="loaded (fp32 in the rotation) and/or quiet")
    parser.add_argument("--neighbour", type=Path, help="the fp32 file of the loaded state (default: the model's own)")
    args = parser.parse_args()
    if args.action == "prepare":
        prepare(args.workdir, args.student)
    elif args.action == "time":
        time_model(args.workdir, args.model, args.rounds, args.seconds, args.states.split(","), args.neighbour)
    else:
        report(args.workdir)


if __name__ == "__main__":
    main()
