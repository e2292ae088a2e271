"""Recipe validation: every malformed recipe exits with code 2 and a message naming the field."""

from pathlib import Path

import pytest
import yaml

from edgekd.cli import main
from edgekd.errors import InputError, RecipeError
from edgekd.recipe import apply_override, load_recipe
from tests.conftest import tiny_recipe


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, " ".join((captured.out + captured.err).split())


def broken(change) -> dict:
    recipe = tiny_recipe(Path("runs/unused"))
    recipe["stages"] = [{"distill": {"epochs": 1}}, {"distill": {"epochs": 1}}]
    change(recipe)
    return recipe


MALFORMED = {
    "negative epochs in a stage": (lambda r: r["stages"][1]["distill"].update(epochs=-1), "stages[1].distill.epochs: must be ≥ 0"),
    "alpha above one": (lambda r: r["distill"].update(alpha=1.5), "distill.alpha: must be ≤ 1"),
    "zero temperature": (lambda r: r["distill"].update(temperature=0), "distill.temperature: must be > 0"),
    "unknown top-level key": (lambda r: r.update(stagse=[]), "stagse: unknown field. Did you mean 'stages'"),
    "unknown stage kind": (lambda r: r["stages"].append({"distil": {}}), "stages[2]: unknown stage kind 'distil'. Did you mean 'distill'?"),
    "typo inside a stage": (lambda r: r["stages"][0]["distill"].update(epoch=3), "stages[0].distill.epoch: unknown field. Did you mean 'epochs'"),
    "missing teacher": (lambda r: r.pop("teacher"), "teacher: required field is missing"),
    "teacher with two sources": (lambda r: r["teacher"].update(checkpoint="t.pt"), "teacher: give exactly one of checkpoint"),
    "zero batch size": (lambda r: r["data"].update(batch_size=0), "data.batch_size: must be ≥ 1"),
    "batch size of the wrong type": (lambda r: r["data"].update(batch_size="big"), "data.batch_size: Input should be a valid integer"),
    "negative seed": (lambda r: r.update(seed=-1), "seed: must be ≥ 0"),
    "unknown device": (lambda r: r.update(device="gpu"), "device: must be auto, cpu, cuda, cuda:N or mps"),
    "stage that is not a mapping": (lambda r: r["stages"].append("prune"), "stages[2]: must be a mapping"),
    "two kinds in one stage": (lambda r: r["stages"].append({"distill": {}, "export": {}}), "stages[2]: needs exactly one stage kind"),
    "recover on a distill stage": (lambda r: r["stages"][0].update(recover={"epochs": 1}), "stages[0].recover: a distill stage's settings are its training"),
    "unknown optimizer": (lambda r: r["distill"].update(optimizer={"name": "adam"}), "distill.optimizer.name: Input should be 'sgd' or 'adamw'"),
    "negative teacher epochs": (lambda r: r["teacher"]["train"].update(epochs=-3), "teacher.train.epochs: must be ≥ 0"),
    "bad name": (lambda r: r.update(name="my run/1"), "name: String should match pattern"),
    "val split of one": (lambda r: r["data"].update(val_split=1.0), "data.val_split: must be < 1"),
    "negative learning rate in a stage": (lambda r: r["stages"][0]["distill"].update(lr=-0.1), "stages[0].distill.optimizer.lr: must be > 0"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_recipe_exits_2_naming_the_field(case, tmp_path, capsys):
    change, expected = MALFORMED[case]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(broken(change)))
    code, output = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert expected in output
    assert "Traceback" not in output


def test_every_problem_is_reported_at_once():
    recipe = broken(lambda r: (r["distill"].update(alpha=2), r["data"].update(batch_size=0)))
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe)
    assert any(p.startswith("distill.alpha") for p in error.value.problems)
    assert any(p.startswith("data.batch_size") for p in error.value.problems)


@pytest.mark.parametrize(
    "content,expected",
    [("name: [unclosed", "is not valid YAML"), ("- just\n- a list\n", "must hold a mapping at the top, not a list")],
)
def test_unreadable_recipe_file_exits_2(content, expected, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, output = run_cli(["validate", str(path)], capsys)
    assert code == 2 and expected in output and "bad.yaml" in output


def test_missing_recipe_file_exits_2(tmp_path, capsys):
    code, output = run_cli(["compress", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml" in output and "does not exist" in output


def test_set_overrides_are_validated_like_the_file(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "run")))
    code, output = run_cli(["validate", str(path), "--set", "distill.temperature=2", "--set", "stages[0].distill.epochs=5"], capsys)
    assert code == 0 and "valid" in output
    code, output = run_cli(["validate", str(path), "--set", "distill.alpha=7"], capsys)
    assert code == 2 and "distill.alpha: must be ≤ 1.0 (got 7)" in output


def test_override_paths():
    raw = tiny_recipe(Path("w"))
    apply_override(raw, "stages[0].distill.epochs=9")
    apply_override(raw, "distill.optimizer.name=adamw")
    apply_override(raw, "data.options={image_size: 16}")
    assert raw["stages"][0]["distill"]["epochs"] == 9
    assert raw["distill"]["optimizer"]["name"] == "adamw"
    assert raw["data"]["options"] == {"image_size": 16}
    for bad in ("stages[4].distill.epochs=1", "distill.temperature", "=3"):
        with pytest.raises(InputError):
            apply_override(raw, bad)


def test_recover_blocks_merge_over_the_default_distill_block():
    recipe = load_recipe(tiny_recipe(Path("w"), stages=[{"distill": {"epochs": 3, "lr": 0.001}}]))
    recover = recipe.plan[0].recover
    assert recover.epochs == 3 and recover.optimizer.lr == 0.001
    assert recover.temperature == recipe.distill.temperature and recover.alpha == recipe.distill.alpha


def test_shipped_recipes_are_valid():
    for path in Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml"):
        load_recipe(path)
