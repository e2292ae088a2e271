"""The standard-library function task (edgekd.data.stdlib) and recipes/text-classify.yaml run small."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

import edgekd
from edgekd.data.stdlib import function_rows, write_function_rows
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
