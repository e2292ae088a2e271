"""`edgekd bench` end to end on real ONNX models exported from small torch nets and real
onnxruntime sessions: API, JSON, CLI, interleaving, ratios, bad inputs. Paired mode here
(one process, fast); deployment mode's fresh processes are tested in test_bench_deployment.py."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import typer
from onnx import TensorProto, helper
from rich.console import Console
from typer.testing import CliRunner

from edgekd.bench import SCHEMA, benchmark, render
from edgekd.cli.bench import bench_command
from edgekd.errors import EdgekdError, InputError

# Short runs: these tests check the harness, not the models' speed.
QUICK = dict(mode="paired", threads=1, warmup_s=0.05, min_iterations=20, min_duration_s=0.15)


class TinyNet(torch.nn.Module):
    def __init__(self, width: int = 8, depth: int = 1):
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU()]
        for _ in range(depth - 1):
            layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def export(model: torch.nn.Module, path: Path, size: int) -> Path:
    torch.onnx.export(
        model.eval(), torch.randn(1, 3, size, size), str(path), dynamo=False,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}},
    )  # fmt: skip
    return path


@pytest.fixture(scope="module", autouse=True)
def peak_cache(tmp_path_factory):
    """Keep the measured GEMM peak out of the user's ~/.cache (measured once for this module)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench_models")
    torch.manual_seed(0)
    return {
        "small": export(TinyNet(width=8), folder / "small.onnx", 16),
        "large": export(TinyNet(width=32, depth=3), folder / "large.onnx", 32),
    }


def cli(args: list[str]):
    """Run `bench` the way the main CLI does; returns (exit code, result). EdgekdErrors map to their exit codes."""
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("bench")(bench_command)
    result = CliRunner().invoke(app, ["bench", *args])
    exception = result.exception
    return (exception.exit_code if isinstance(exception, EdgekdError) else result.exit_code), result


def test_two_models_two_batches_end_to_end(models):
    result = benchmark([models["small"], models["large"]], batch_sizes=(1, 4), profile=True, **QUICK)
    data = json.loads(json.dumps(result.to_json()))  # JSON-able all the way down
    assert data["schema"] == SCHEMA
    cases = [(r["model"], r["batch"]) for r in data["results"]]
    assert cases == [("small", 1), ("large", 1), ("small", 4), ("large", 4)]
    for entry in data["results"]:
        latency = entry["latency_ms"]
        order = [latency[stat] for stat in ("min", "median", "p90", "p95", "p99", "max")]
        assert order == sorted(order)
        assert len(entry["latencies_ms"]) == entry["runs"] >= QUICK["min_iterations"]
        assert entry["measured_s"] >= QUICK["min_duration_s"]
        assert entry["memory"]["peak_rss_mb"] >= entry["memory"]["baseline_rss_mb"] > 0
        assert entry["roofline"]["macs"] > 0 and entry["roofline"]["efficiency"] > 0
        assert 0 < len(entry["profile"]) <= 10 and sum(op["share"] for op in entry["profile"]) <= 1.0 + 1e-9
        assert entry["first_inference_ms"] > 0
    # The large net does more work per sample than the small one, at every batch size.
    assert [r["batch"] for r in data["ratios"]] == [1, 4]
    assert all(r["median_ratio"] > 1 and r["ci_low"] <= r["median_ratio"] <= r["ci_high"] for r in data["ratios"])
    settings = data["settings"]
    assert settings["spinning"] == "stop" and "rotating blocks" in settings["interleave"]
    assert "type 7" in settings["percentile_method"]
    assert data["environment"]["cpu"]["model"] and data["environment"]["threads"] == 1
    assert data["models"][0]["description"]["arena"]["cpu_mem_arena"] is True

    console = Console(record=True, width=160)
    render(result, console)
    text = console.export_text()
    assert "batch 4" in text and "median ratio vs small (CI)" in text and "slowest nodes" in text


def test_model_against_itself_has_a_ratio_ci_containing_one(models):
    result = benchmark([models["small"], models["small"]], memory=False, roofline=False, **QUICK)
    assert [m.name for m in result.models] == ["small", "small#2"]
    ratio = result.ratio("small#2", 1)
    assert ratio.contains(1.0), ratio


def test_interleaved_sessions_stop_spinning_and_deployed_ones_keep_ort_defaults(models):
    """Interleaving must not change what a model measures: an idle session's spinning threads once made its
    neighbour 4× slower. Paired sessions therefore stop spinning after each run; deployment-mode sessions
    keep ONNX Runtime's default options (spinning on), since each has its process to itself."""
    from edgekd.bench.backends import BackendOptions
    from edgekd.bench.backends.onnxruntime_backend import session_options

    def entry(spinning: str, key: str) -> str:
        return session_options(BackendOptions(threads=2, spinning=spinning)).get_session_config_entry(key)

    assert entry("stop", "session.force_spinning_stop") == "1"
    assert entry("off", "session.intra_op.allow_spinning") == "0"
    default = session_options(BackendOptions(spinning="on"))
    assert default.intra_op_num_threads == 0
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ORT's default applies: spinning on
        default.get_session_config_entry("session.intra_op.allow_spinning")
    result = benchmark([models["small"], models["large"]], memory=False, roofline=False, **QUICK)
    assert {m.description["spinning"] for m in result.models} == {"stop"}
    assert all("force_spinning_stop=1" in m.description["session_options"] for m in result.models)


def test_cli_writes_json_that_parses_back(models, tmp_path):
    out = tmp_path / "out" / "bench.json"
    code, result = cli(
        [str(models["small"]), str(models["large"]), "--mode", "paired", "--batch", "1,2", "--threads", "1",
         "--warmup", "0.02", "--min-iterations", "10", "--min-duration", "0.05", "--no-memory", "--json", str(out)]
    )  # fmt: skip
    assert code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA and {r["batch"] for r in data["results"]} == {1, 2}
    assert "median ratio vs small" in result.output


def test_cli_help_has_an_example():
    code, result = cli(["--help"])
    _, bench_help = cli(["bench", "--help"])
    assert code == 0 and "edgekd bench student.int8.onnx teacher.onnx" in bench_help.output


def test_npz_inputs_are_fed_and_cut_to_the_batch(models, tmp_path):
    npz = tmp_path / "inputs.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32))
    result = benchmark([models["small"]], batch_sizes=(1, 4), inputs=npz, memory=False, roofline=False, **QUICK)
    assert result.to_json()["settings"]["inputs"]["npz"] == str(npz)
    with pytest.raises(InputError, match=r"inputs.npz\['x'\] .*6 samples; batch size 8"):
        benchmark([models["small"]], batch_sizes=(8,), inputs=npz, memory=False, **QUICK)


def test_torch_module_is_benched_beside_its_export(models):
    net = TinyNet(width=8)
    result = benchmark([models["small"], net], batch_sizes=(2,), memory=True, **QUICK)
    case = result.case("TinyNet", 2)
    assert case.timing.runs >= QUICK["min_iterations"] and case.memory is None and case.roofline is None
    assert result.models[1].backend == "torch"
    assert any("TinyNet" in note and "memory" in note for note in result.notes)


# ----- bad inputs: InputError (exit code 2) with a message naming the file or input -----


def dynamic_image_model(path: Path) -> Path:
    """A conv whose input has dynamic batch, height and width."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, "height", "width"])],
        [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_dynamic_dim_without_input_shape_names_the_input(tmp_path):
    model = dynamic_image_model(tmp_path / "dyn.onnx")
    with pytest.raises(InputError, match=r"dyn.onnx: input 'x' has dynamic dimension\(s\) \[2, 3\].*--input-shape x="):
        benchmark([model], **QUICK)
    result = benchmark([model], input_shapes={"x": (1, 3, 8, 8)}, batch_sizes=(2,), memory=False, **QUICK)
    assert result.case("dyn", 2).roofline["macs"] == 2 * 4 * 8 * 8 * 27


@pytest.mark.parametrize(
    "shape, message",
    [((1, 3, 8), r"has rank 3, but input 'x' of .*dyn.onnx has rank 4"), ((1, 5, 8, 8), r"dimension 1 is fixed at 3")],
)
def test_input_shape_that_does_not_fit_names_file_and_input(tmp_path, shape, message):
    model = dynamic_image_model(tmp_path / "dyn.onnx")
    with pytest.raises(InputError, match=message):
        benchmark([model], input_shapes={"x": shape}, **QUICK)


def test_input_shape_for_an_unknown_input_suggests_the_right_name(models):
    with pytest.raises(InputError, match="unknown model input 'xx'. Did you mean 'x'"):
        benchmark([models["small"]], input_shapes={"xx": (1, 3, 16, 16)}, **QUICK)


def test_not_an_onnx_file_and_missing_file_exit_2(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    code, result = cli([str(text)])
    assert code == 2 and isinstance(result.exception, InputError)
    assert "notes.onnx" in str(result.exception) and "not an ONNX model" in str(result.exception)
    code, result = cli([str(tmp_path / "missing.onnx")])
    assert code == 2 and "missing.onnx" in str(result.exception) and "does not exist" in str(result.exception)


def test_npz_array_of_the_wrong_shape_names_the_array(models, tmp_path):
    npz = tmp_path / "wrong.npz"
    np.savez(npz, x=np.zeros((4, 3, 12, 12), np.float32))
    with pytest.raises(InputError, match=r"wrong.npz\['x'\] .*dimension 2 must be 16"):
        benchmark([models["small"]], inputs=npz, **QUICK)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "1,x"], "--batch '1,x'"),
        (["--input-shape", "x:1x3"], "--input-shape 'x:1x3'"),
        (["--providers", "cuda"], "CUDAExecutionProvider not available"),
        (["--spinning", "sometimes"], "unknown spinning mode 'sometimes'"),
        (["--backend", "tensorrtt"], "Did you mean 'tensorrt'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(models, args, message):
    code, result = cli([str(models["small"]), *args])
    assert code == 2 and message in str(result.exception)


def test_spinning_on_with_two_models_is_refused_in_paired_mode(models):
    with pytest.raises(InputError, match="spinning 'on' needs a single model in paired mode"):
        benchmark([models["small"], models["large"]], spinning="on", **QUICK)
    with pytest.raises(InputError, match="paired mode times one setting"):
        benchmark([models["small"]], spinning="both", **QUICK)


def test_fixed_batch_model_refuses_another_batch(tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(TinyNet().eval(), torch.randn(1, 3, 8, 8), str(path), dynamo=False, input_names=["x"])
    with pytest.raises(InputError, match="fixed.onnx: input 'x' has a fixed batch of 1"):
        benchmark([path], batch_sizes=(4,), **QUICK)
