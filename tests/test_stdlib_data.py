"""The standard-library function task (edgekd.data.stdlib) and recipes/text-classify.yaml run small."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

import edgekd
from edgekd.data.stdlib import function_rows, write_function_rows, write_source_rows
from edgekd.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("json", "html", "wsgiref")  # small packages every CPython ships


def test_function_rows_are_balanced_hold_out_whole_files_and_drop_docstrings():
    train, test = function_rows(SMALL, per_package=20, seed=1)
    assert set(Counter(r["package"] for r in train)) == set(SMALL) == set(Counter(r["package"] for r in test))
    assert max(Counter(r["package"] for r in train).values()) <= 16 and max(Counter(r["package"] for r in test).values()) <= 4
    files = lambda rows: {r["where"].split(":")[0] for r in rows}  # noqa: E731
    assert not files(train) & files(test)
    assert all(r["code"].startswith(("def ", "async def ", "@")) and r["where"].startswith(r["package"] + "/") for r in train)
    assert function_rows(SMALL, per_package=20, seed=1) == (train, test)
    with pytest.raises(InputError, match="'no_such_package'"):
        function_rows(("json", "no_such_package"))


def test_the_text_classify_recipe_runs_small_on_standard_library_functions(tmp_path):
    write_function_rows(tmp_path / "data", packages=SMALL, per_package=30)
    recipe = yaml.safe_load((ROOT / "recipes" / "text-classify.yaml").read_text())
    recipe["workdir"] = str(tmp_path / "run")
    recipe["data"]["root"] = str(tmp_path / "data")
    recipe["data"]["options"] |= {"max_length": 32, "tokenizer": {"kind": "wordpiece", "vocab_size": 300}}
    recipe["teacher"] = {"model": "bert_s(dim=32, depth=2, heads=4, mlp_ratio=2)", "train": {**recipe["teacher"]["train"], "epochs": 3}}
    recipe["distill"]["epochs"] = 1
    for stage in recipe["stages"]:
        stage.get("recover", {}).pop("epochs", None)
        if "prune" in stage:
            stage["prune"]["steps"] = 1
        if "bench" in stage:
            stage["bench"] = {"rounds": 2, "batch_sizes": [1], "warmup_s": 0.0, "min_iterations": 2, "min_duration_s": 0.01, "memory": False, "mode": "paired"}
    recipe.pop("gates")
    report = edgekd.compress(recipe, quiet=True).to_json()
    assert report["dataset"]["labels"] == sorted(SMALL)
    assert report["student"]["macs"] < report["teacher"]["macs"]
    assert report["student"]["onnx"]["int8"]["parity"]["agreement"] >= 0.99
    assert json.loads((tmp_path / "run" / "report.json").read_text())["complete"]


def test_source_rows_hold_test_packages_out_whole(tmp_path):
    train, test = write_source_rows(tmp_path, ("json", "html"), ("wsgiref",), chunk_lines=6, per_package=10)
    train_rows = [json.loads(line) for line in train.read_text().splitlines()]
    test_rows = [json.loads(line) for line in test.read_text().splitlines()]
    assert len(train_rows) == 20 and len(test_rows) == 10
    assert {r["where"].split("/")[0] for r in train_rows} == {"json", "html"} and {r["where"].split("/")[0] for r in test_rows} == {"wsgiref"}
    assert all(r["text"].strip() and r["text"].count("\n") <= 6 for r in train_rows + test_rows)
    with pytest.raises(InputError, match="both splits"):
        write_source_rows(tmp_path, ("json",), ("json",))


def test_the_lm_stdlib_recipe_runs_small_on_standard_library_sources(tmp_path):
    write_source_rows(tmp_path / "data", ("json", "html"), ("wsgiref",), chunk_lines=4, per_package=40)
    recipe = yaml.safe_load((ROOT / "recipes" / "lm-stdlib.yaml").read_text())
    recipe["workdir"] = str(tmp_path / "run")
    recipe["data"]["root"] = str(tmp_path / "data")
    recipe["data"]["options"] |= {"max_length": 24, "tokenizer": {"kind": "bpe", "vocab_size": 200}}
    recipe["teacher"] = {"model": "gpt_s(dim=32, depth=2, heads=4, mlp_ratio=2)", "train": {**recipe["teacher"]["train"], "epochs": 2}}
    recipe["distill"]["epochs"] = 1
    for stage in recipe["stages"]:
        if "prune" in stage:  # at this width the output layer over the vocabulary holds most of the MACs
            stage["prune"] |= {"steps": 1, "target_macs": 0.8}
        if "bench" in stage:
            stage["bench"] = {"rounds": 2, "batch_sizes": [1], "warmup_s": 0.0, "min_iterations": 2, "min_duration_s": 0.01,
                              "memory": False, "mode": "paired", "new_tokens": 4}  # fmt: skip
    report = edgekd.compress(recipe, quiet=True).to_json()
    assert report["dataset"]["task"] == "causal-lm" and report["teacher"]["perplexity"] < 200  # below a uniform guess
    assert report["student"]["macs"] < report["teacher"]["macs"]
    assert report["student"]["onnx"]["int8"]["parity"]["agreement"] >= 0.99
    assert {c["new_tokens"] for c in report["generation"]["cases"]} == {4}
