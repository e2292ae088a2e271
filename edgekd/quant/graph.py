"""Putting fake quantization exactly where the target runtime will put Q/DQ nodes,
and taking it out again.

The model is traced with torch.fx, so functional ops (residual `+`, `torch.flatten`)
are visible. One placement pass reads the profile:

* Conv/Linear layers become `QuantLayer`s (int8 per-channel weights), the image stem
  included; `float_stem` makes the variant that ships the stem float (`stem_channels`).
* The tensor input of every Conv/Gemm/MatMul is quantized; of an Add, the residual
  input of an Add after a Conv (TensorRT) or both inputs (ONNX Runtime); of pooling, with ONNX Runtime.
* With `requantize_outputs` (ONNX Runtime) the output of every Conv/Gemm/MatMul/Add/
  pool/ReLU is quantized too — after the ReLU when one follows, since the runtime
  fuses it — except outputs that only leave the model (the logits stay float).
* Data-movement ops (MaxPool, Flatten, reshapes) reuse the quantizer of their input:
  their output stays on the same grid, so the runtime can drop the Q/DQ around them.

Training-time behaviour lives in a `QuantSchedule` (a forward pre-hook on the model):
it counts training batches, so observers and BatchNorm statistics freeze at a given
epoch whatever training loop drives the model.

>>> from edgekd.models import build_model
>>> from edgekd.quant.profiles import profiles
>>> net = build_model("cnn(width=4)", in_channels=1, num_classes=10)
>>> qnet = insert_fake_quant(net, profiles.get("ort-x86"), batches_per_epoch=10)
>>> calibrate(qnet, [torch.randn(8, 1, 8, 8)])
>>> qnet(torch.randn(2, 1, 8, 8)).shape
torch.Size([2, 10])
>>> sum(isinstance(m, QuantLayer) for m in to_float(qnet).modules())
0
"""

from __future__ import annotations

import copy
import operator
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse
from torch.nn.modules.batchnorm import _BatchNorm

from edgekd.errors import InputError
from edgekd.quant.fake_quant import Calibration, FakeQuantize, QuantScheme, calibrating
from edgekd.quant.modules import WEIGHTED_LAYERS, QuantLayer
from edgekd.quant.profiles import QuantProfile

ACTIVATIONS = (nn.ReLU, nn.ReLU6)
POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
PASSTHROUGH_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Flatten, nn.Identity, nn.Dropout)
FUNCTION_KINDS = {
    operator.add: "add", torch.add: "add", operator.iadd: "add",
    operator.matmul: "matmul", torch.matmul: "matmul", torch.bmm: "matmul",
    F.relu: "activation", torch.relu: "activation", F.relu6: "activation",
    F.adaptive_avg_pool2d: "pool", F.avg_pool2d: "pool",
    torch.flatten: "passthrough", torch.reshape: "passthrough", F.max_pool2d: "passthrough",
}
METHOD_KINDS = {
    "add": "add", "add_": "add", "relu": "activation", "relu_": "activation",
    "flatten": "passthrough", "view": "passthrough", "reshape": "passthrough",
    "squeeze": "passthrough", "unsqueeze": "passthrough",
}
COMPUTE = {"weighted", "matmul", "add", "pool"}
SCHEDULE_NAME = "quant_schedule"


class QuantSchedule(nn.Module):
    """Freezes observers and BatchNorm statistics after given epochs of training.

    Epochs are counted from the model's training-mode forward passes divided by the
    training loader's batches per epoch, both known when quantization is inserted;
    the count is a buffer, so a resumed run continues it."""

    def __init__(self, profile: str, batches_per_epoch: int, freeze_observers_epoch: int, freeze_bn_epoch: int):
        super().__init__()
        self.profile = profile
        self.batches_per_epoch = max(1, batches_per_epoch)
        self.freeze_observers_epoch = freeze_observers_epoch
        self.freeze_bn_epoch = freeze_bn_epoch
        self.register_buffer("train_batches", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"profile={self.profile}, batches_per_epoch={self.batches_per_epoch}, "
                f"freeze_observers_epoch={self.freeze_observers_epoch}, freeze_bn_epoch={self.freeze_bn_epoch}")

    @property
    def epoch(self) -> int:
        return int(self.train_batches) // self.batches_per_epoch

    def before_forward(self, root: nn.Module, args: tuple[object, ...]) -> None:
        if not root.training:
            return
        epoch = self.epoch
        self.train_batches += 1
        for module in root.modules():
            if isinstance(module, FakeQuantize):
                module.observing = epoch < self.freeze_observers_epoch
            elif isinstance(module, _BatchNorm) and epoch >= self.freeze_bn_epoch:
                module.eval()  # fit() calls model.train() every epoch, so this is re-applied per batch


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds for untraceable Python
        raise InputError(
            f"quantization needs a model that torch.fx can trace, and {type(model).__name__} cannot be traced: {exc}. "
            "Data-dependent Python control flow in forward() is the usual cause; move it out of forward()."
        ) from None


def fold_batchnorm(model: fx.GraphModule) -> fx.GraphModule:
    """Conv → BatchNorm pairs become one conv with the BN's affine transform in its weight and bias."""
    was_training = model.training
    folded = fuse(model.eval())
    model.train(was_training)
    return folded.train(was_training)


def is_stem(layer: nn.Module, profile: QuantProfile) -> bool:
    """A regular conv on so few input channels that the profile lets the export ship it float."""
    return (
        isinstance(layer, nn.modules.conv._ConvNd)
        and layer.groups == 1
        and layer.in_channels <= profile.stem_channels
    )


def node_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """weighted | matmul | add | pool | activation | passthrough | other."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        for types, kind in ((QuantLayer, "weighted"), (ACTIVATIONS, "activation"), (POOLS, "pool"), (PASSTHROUGH_MODULES, "passthrough")):
            if isinstance(module, types):
                return kind
        return "other"
    if node.op == "call_function":
        kind = FUNCTION_KINDS.get(node.target, "other")
    elif node.op == "call_method":
        kind = METHOD_KINDS.get(str(node.target), "other")
    else:
        return "other"
    if kind == "add" and len(tensor_args(node)) < 2:
        return "other"  # adding a constant is not a residual Add
    return kind


def tensor_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.args if isinstance(a, fx.Node)]


class _Placement:
    """One pass over the traced graph, inserting FakeQuantize calls per the profile."""

    def __init__(self, model: fx.GraphModule, profile: QuantProfile, make_quantizer: Callable[[], FakeQuantize]):
        self.model = model
        self.graph = model.graph
        self.profile = profile
        self.make_quantizer = make_quantizer
        self.modules = dict(model.named_modules())

    def is_quantized(self, node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(self.modules.get(str(node.target)), FakeQuantize)

    def run(self) -> None:
        for node in list(self.graph.nodes):
            kind = node_kind(node, self.modules)
            if kind == "passthrough" and tensor_args(node) and self.is_quantized(tensor_args(node)[0]):
                self.call_after(node, str(tensor_args(node)[0].target))
                continue
            for arg in self.inputs_to_quantize(node, kind):
                node.replace_input_with(arg, self.quantized(arg, consumer=node))
            if self.profile.requantize_outputs and self.output_to_quantize(node, kind):
                self.quantized(node, consumer=None)

    def inputs_to_quantize(self, node: fx.Node, kind: str) -> list[fx.Node]:
        args = tensor_args(node)
        if kind == "weighted":
            args = args[:1]
        elif kind == "add" and not self.profile.requantize_outputs:
            args = self.residual_inputs(args)
        elif kind not in COMPUTE or (kind == "pool" and not self.profile.requantize_outputs):
            args = []
        return [a for a in args if not self.is_quantized(a)]

    def residual_inputs(self, args: list[fx.Node]) -> list[fx.Node]:
        """The Add inputs that do not come straight from a Conv (→ BN), so that the runtime fuses the Add
        into that Conv; the last one if all do. None of an Add that follows no Conv: a transformer's
        residual stream stays float (TensorRT adds it in the preceding GEMM's epilogue)."""
        def from_conv(node: fx.Node) -> bool:
            if node.op == "call_module" and isinstance(self.modules[str(node.target)], _BatchNorm):
                node = tensor_args(node)[0]
            module = self.modules.get(str(node.target)) if node.op == "call_module" else None
            return isinstance(module, QuantLayer) and isinstance(module.layer, nn.modules.conv._ConvNd)

        if not any(from_conv(a) for a in args):
            return []
        residual = [a for a in args if not from_conv(a)]
        return residual or args[-1:]

    def output_to_quantize(self, node: fx.Node, kind: str) -> bool:
        users = list(node.users)
        if kind not in COMPUTE | {"activation"} or self.is_quantized(node):
            return False
        if kind in COMPUTE and len(users) == 1 and node_kind(users[0], self.modules) == "activation":
            return False  # the ReLU's output is quantized instead; the runtime fuses the ReLU
        return not all(u.op == "output" for u in users)

    def quantized(self, tensor: fx.Node, consumer: fx.Node | None) -> fx.Node:
        """The quantized version of `tensor`. ONNX Runtime never sees the float one: all users switch."""
        existing = next((u for u in tensor.users if self.is_quantized(u)), None)
        if existing is not None:
            return existing
        name = f"{tensor.name}_fq"
        self.model.add_submodule(name, self.make_quantizer())
        self.modules[name] = self.model.get_submodule(name)
        fq_node = self.insert_call(tensor, name)
        if consumer is None or self.profile.requantize_outputs:
            tensor.replace_all_uses_with(fq_node, delete_user_cb=lambda user: user is not fq_node)
        return fq_node

    def call_after(self, node: fx.Node, quantizer_name: str) -> None:
        """Requantize a data-movement op's output with its input's quantizer (same grid, same scale)."""
        fq_node = self.insert_call(node, quantizer_name)
        node.replace_all_uses_with(fq_node, delete_user_cb=lambda user: user is not fq_node)

    def insert_call(self, after: fx.Node, module_name: str) -> fx.Node:
        with self.graph.inserting_after(after):
            return self.graph.call_module(module_name, (after,))


def insert_fake_quant(
    model: nn.Module,
    profile: QuantProfile,
    *,
    batches_per_epoch: int,
    calibration: Calibration = "max",
    percentile: float = 99.99,
    learnable_scales: bool = False,
    freeze_observers_epoch: int = 1,
    freeze_bn_epoch: int = 1,
) -> fx.GraphModule:
    """A copy of `model` with fake quantization where `profile`'s runtime quantizes.

    The result still needs `calibrate` before its scales mean anything."""
    device = next(model.parameters()).device
    traced = trace(model)
    if profile.fold_batchnorm:
        traced = fold_batchnorm(traced)
    # Only layers the graph calls: one inside a module fx keeps whole (nn.MultiheadAttention's out_proj)
    # is computed with by its parent through `.weight`, which would bypass the quantizer — it stays float.
    called = {str(node.target) for node in traced.graph.nodes if node.op == "call_module"}
    for name, module in list(traced.named_modules()):
        if name in called and isinstance(module, WEIGHTED_LAYERS):
            traced.set_submodule(name, QuantLayer.from_float(module, learnable=learnable_scales))

    def make_quantizer() -> FakeQuantize:
        scheme = QuantScheme(profile.activation_dtype)
        return FakeQuantize(scheme, calibration=calibration, percentile=percentile, learnable=learnable_scales).to(device)

    _Placement(traced, profile, make_quantizer).run()
    traced.graph.lint()
    traced.recompile()
    schedule = QuantSchedule(profile.name, batches_per_epoch, freeze_observers_epoch, freeze_bn_epoch).to(device)
    traced.add_submodule(SCHEDULE_NAME, schedule)
    traced.register_forward_pre_hook(schedule.before_forward)
    return traced


def quant_schedule(model: nn.Module) -> QuantSchedule | None:
    """The schedule of a model with fake quantization inserted, None for a float model."""
    schedule = getattr(model, SCHEDULE_NAME, None)
    return schedule if isinstance(schedule, QuantSchedule) else None


def quantizers(model: nn.Module) -> list[FakeQuantize]:
    return [m for m in model.modules() if isinstance(m, FakeQuantize)]


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor | Mapping[str, torch.Tensor]]) -> None:
    """Run batches through the model (eval mode, float) and set every quantizer's scale from them.
    A batch is the model's input, or a mapping of keyword inputs (input_ids, attention_mask, …)."""
    was_training = model.training
    model.eval()
    try:
        with calibrating(quantizers(model)):
            for x in batches:
                model(**x) if isinstance(x, Mapping) else model(x)
    finally:
        model.train(was_training)


def stem_layers(model: nn.Module, profile: QuantProfile) -> list[str]:
    """Names of the quantized stem convs a float-stem export would ship float (torch.fx models only:
    a module-swapped one keeps its stem int8, as trained)."""
    if not isinstance(model, fx.GraphModule):
        return []
    return [name for name, m in model.named_modules() if isinstance(m, QuantLayer) and is_stem(m.layer, profile)]


def float_stem(model: fx.GraphModule, profile: QuantProfile) -> fx.GraphModule:
    """A copy whose stem convs (`stem_layers`) are float again, together with the quantizers that only
    fed them (the model input's); everything else stays quantized exactly as trained.

    >>> from edgekd.models import build_model
    >>> from edgekd.quant.profiles import profiles
    >>> qnet = insert_fake_quant(build_model("resnet_s(width=4)", in_channels=1, num_classes=10), profiles.get("ort-x86"), batches_per_epoch=1)
    >>> stem_layers(qnet, profiles.get("ort-x86")), stem_layers(float_stem(qnet, profiles.get("ort-x86")), profiles.get("ort-x86"))
    (['stem.0'], [])
    """
    root = copy.deepcopy(model)
    stems = set(stem_layers(root, profile))
    for name in stems:
        root.set_submodule(name, root.get_submodule(name).to_float())
    modules = dict(root.named_modules())
    for node in list(root.graph.nodes):
        feeds_only_stems = node.users and all(u.op == "call_module" and str(u.target) in stems for u in node.users)
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), FakeQuantize) and feeds_only_stems:
            node.replace_all_uses_with(node.args[0])
            root.graph.erase_node(node)
            if not any(other.op == "call_module" and other.target == node.target for other in root.graph.nodes):
                root.delete_submodule(str(node.target))
    root.graph.lint()
    root.recompile()
    return root


def to_float(model: fx.GraphModule) -> fx.GraphModule:
    """The float model back: plain layers (with the trained float weights), no quantizers, no schedule."""
    root = copy.deepcopy(model)
    for name, module in list(root.named_modules()):
        if isinstance(module, QuantLayer):
            root.set_submodule(name, module.to_float())
    modules = dict(root.named_modules())
    graph = copy.deepcopy(root.graph)
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), FakeQuantize):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    # A new GraphModule holds only the modules its graph calls, and none of the hooks.
    return fx.GraphModule(root, graph).train(model.training)


def int8_size_bytes(model: nn.Module) -> int:
    """Bytes of the deployed int8 model: a byte per quantized weight (half a byte for int4), a scale (4) and zero point (1)
    per quantizer channel, every other parameter and buffer at its stored size."""
    total, counted = 0, set()
    for module in model.modules():
        if isinstance(module, QuantLayer):  # int4 weights: two to a byte
            total += -(-module.layer.weight.numel() // (2 if module.weight_fq.scheme.dtype == "int4" else 1))
            counted.add(id(module.layer.weight))
        elif isinstance(module, FakeQuantize):
            total += module.scale.numel() * 5
        if isinstance(module, (FakeQuantize, QuantSchedule)):
            counted.update(id(t) for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)])
    rest = [t for t in [*model.parameters(), *model.buffers()] if id(t) not in counted]
    return total + sum(t.numel() * t.element_size() for t in rest)
