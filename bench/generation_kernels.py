"""What each compressed form of one decoder costs and buys in ONNX Runtime: fp32, int8 QAT
(ort-x86: MatMulIntegerToFloat) and int4 weight-only (MatMulNBits, float and int8 compute),
side by side in one generation benchmark.

    python bench/generation_kernels.py prepare   # export the files (cpujob work)
    python bench/generation_kernels.py time      # time them side by side (cpujob timing)

The decoder is a random-initialised GPT-2 (4 layers × 256, vocabulary 4096): the kernels'
speed does not depend on what the weights learned, and parity is measured on the same model.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import torch
import transformers

from edgekd.bench.generation import benchmark_generation, render_generation
from edgekd.export.runtime import optimized_op_counts
from edgekd.export.transformer import SpecialTokens, export_sequence_model, sequence_parity
from edgekd.quant.profiles import profiles
from edgekd.quant.swap import calibrate, insert_int4_weights, insert_linear_fake_quant

FOLDER = Path("runs/generation-kernels")
VOCAB, PAD, EOS = 4096, 0, 1
KERNELS = ("MatMul", "FusedMatMul", "Gemm", "MatMulIntegerToFloat", "QGemm", "QLinearMatMul", "MatMulNBits", "DequantizeLinear")


def decoder() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=256, n_layer=4, n_head=4, n_positions=256,
                                     bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD)  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def batches(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    ids = [torch.randint(2, VOCAB, (8, 48), generator=generator) for _ in range(count)]
    return [{"input_ids": x, "attention_mask": torch.ones_like(x)} for x in ids]


def prepare() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    float_model = decoder()
    int8 = insert_linear_fake_quant(float_model, profiles.get("ort-x86"), batches_per_epoch=1)
    calibrate(int8, batches(8, seed=1))
    int4 = insert_int4_weights(float_model, block_size=32)
    variants = {"fp32": (float_model, 0), "int8": (int8, 0), "int4-acc0": (int4, 0), "int4-acc4": (int4, 4)}
    facts = {}
    for name, (model, level) in variants.items():
        path = FOLDER / f"{name}.onnx"
        export_sequence_model(model, path, "decoder", tokens=SpecialTokens(PAD, EOS), int4_accuracy_level=level)
        parity = sequence_parity(model, path, batches(2, seed=2), min_agreement=0.0)
        kernels = Counter({k: v for k, v in optimized_op_counts(path).items() if k in KERNELS})
        facts[name] = {"bytes": path.stat().st_size, "parity": parity, "kernels": dict(kernels)}
        print(name, json.dumps(facts[name]))
    (FOLDER / "facts.json").write_text(json.dumps(facts, indent=1))


def time() -> None:
    files = {name: FOLDER / f"{name}.onnx" for name in ("fp32", "int8", "int4-acc0", "int4-acc4")}
    result = benchmark_generation(files, batch_sizes=(1, 8), prompt_length=32, new_tokens=16, threads=2)
    (FOLDER / "generation.json").write_text(json.dumps(result.to_json(), indent=1))
    print(render_generation(result))


if __name__ == "__main__":
    {"prepare": prepare, "time": time}[sys.argv[1]]()
