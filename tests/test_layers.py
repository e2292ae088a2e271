"""The package's import structure: layered (pyproject.toml's import-linter contract) and free of cycles."""

import re
import shutil
import subprocess
from pathlib import Path

import grimp
from importlinter.api import read_configuration

ROOT = Path(__file__).parent.parent


def test_no_module_imports_itself_back_through_a_cycle():
    graph = grimp.build_graph("edgekd")
    cycles = sorted(
        f"{importer} -> {imported}"
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    )
    assert cycles == [], "imports that close a cycle (each import and the way back):\n" + "\n".join(cycles)


def test_the_layers_contract_holds():
    lint = shutil.which("lint-imports")
    assert lint is not None, "import-linter is in the dev extra: pip install -e '.[dev]'"
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_of_the_package_has_a_place_in_the_layers():
    layers = read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"][0]["layers"]
    placed = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    top_level = {".".join(module.split(".")[:2]) for module in grimp.build_graph("edgekd").modules if module != "edgekd"}
    assert sorted(top_level - placed) == [], "add these modules to a layer in pyproject.toml"
