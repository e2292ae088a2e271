"""The prune stage end to end through `edgekd.compress`: pruning alternates with recovery, and resumes exactly."""

import json

import pytest

import edgekd
import edgekd.prune  # noqa: F401  (registers the prune stage)
from edgekd.prune import PruneStage


def prune_recipe(make_recipe, workdir, prune: dict, recover_epochs: int = 1) -> dict:
    return make_recipe(workdir=str(workdir), student="teacher", stages=[{"prune": prune, "recover": {"epochs": recover_epochs}}])


def test_three_pruning_steps_alternate_with_recovery(make_recipe, tmp_path):
    report = edgekd.compress(prune_recipe(make_recipe, tmp_path / "run", {"target_macs": 0.3, "steps": 3}), quiet=True).to_json()
    teacher, steps = report["teacher"], report["steps"]
    assert [(s["stage"], s["step"], s["steps"]) for s in steps] == [("prune", 1, 3), ("prune", 2, 3), ("prune", 3, 3)]
    for step in steps:
        assert step["accuracy_before_recovery"] <= step["accuracy"]
        assert step["macs"] <= step["target"]
        assert step["target_metric"] == "macs"
    macs = [teacher["macs"]] + [s["macs"] for s in steps]
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == 4
    assert 0.25 * teacher["macs"] <= steps[-1]["macs"] <= 0.3 * teacher["macs"]
    assert steps[-1]["params"] < teacher["params"] and steps[-1]["size_bytes"] < teacher["size_bytes"]
    assert steps[-1]["accuracy"] > 0.8
    assert report["student"]["macs"] == steps[-1]["macs"]


def test_resume_after_an_interrupted_step_reproduces_the_uninterrupted_run(make_recipe, tmp_path, monkeypatch):
    prune = {"target_params": 0.4, "steps": 3, "importance": "taylor", "round_to": 2, "sparsity": {"reg": 1e-3, "epochs": 1}}
    reference = edgekd.compress(prune_recipe(make_recipe, tmp_path / "reference", prune), quiet=True).to_json()

    apply = PruneStage.apply

    def interrupted(self, run, step):
        if step == 3:
            raise KeyboardInterrupt  # as if the process were stopped during step 3
        return apply(self, run, step)

    monkeypatch.setattr(PruneStage, "apply", interrupted)
    with pytest.raises(KeyboardInterrupt):
        edgekd.compress(prune_recipe(make_recipe, tmp_path / "resumed", prune), quiet=True)
    monkeypatch.setattr(PruneStage, "apply", apply)
    assert json.loads((tmp_path / "resumed" / "progress.json").read_text())["done"] == [[0, 1], [0, 2]]
    resumed = edgekd.compress(prune_recipe(make_recipe, tmp_path / "resumed", prune), resume=True, quiet=True).to_json()

    def numbers(report: dict) -> list[tuple]:
        return [(s["step"], s["accuracy"], s["accuracy_before_recovery"], s["macs"], s["params"], s["prunable_channels"]) for s in report["steps"]]

    assert len(resumed["steps"]) == 3
    assert numbers(resumed) == numbers(reference)
    assert resumed["student"]["accuracy"] == reference["student"]["accuracy"]
