"""Real text that ships with every Python: the functions of the standard library, labelled by the
package they come from — a text classification task with no download.

    python -m edgekd.data.stdlib runs/data/stdlib-functions     # then: data: {dataset: text, root: that folder}

writes `train.jsonl` and `test.jsonl`, one function a row: `{"code": its source, "package": "asyncio",
"where": "asyncio/tasks.py:123"}`. Functions are read with `ast` from the running interpreter's
standard library (`sysconfig.get_paths()["stdlib"]`); test and `tests` folders are left out.
Whole files are held out for the test split (about `test_share` of a package's functions, files
taken in a seeded order), so a test function never shares its file with a training one. Each package
gives at most `per_package` rows, so the classes stay balanced; docstrings are removed, as they often name the
package. Deterministic for a seed and a Python version.

    python -m edgekd.data.stdlib runs/data/stdlib-source --source

writes the language-modelling data of `recipes/lm-stdlib.yaml` instead (`write_source_rows`): chunks
of consecutive source lines, `{"text": …, "where": …}`, some packages for training and others held
out whole for the test split."""

from __future__ import annotations

import ast
import json
import random
import sys
import sysconfig
from pathlib import Path
from typing import Any, Iterator, Sequence

from edgekd.errors import InputError

# Ten packages that every CPython install ships (tkinter and idlelib are separate packages on some
# Linux distributions), each with a few hundred functions or more.
PACKAGES = ("asyncio", "email", "encodings", "http", "importlib", "logging", "multiprocessing", "unittest", "urllib", "xml")
TEST_FOLDERS = {"test", "tests"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def package_files(package: str, root: Path | None = None) -> list[Path]:
    """The package's .py files, sorted, without test folders."""
    folder = (root or stdlib_root()) / package
    if not folder.is_dir():
        raise InputError(f"package {package!r} is not a folder of this Python's standard library ({folder})")
    return sorted(p for p in folder.rglob("*.py") if not TEST_FOLDERS & set(p.relative_to(folder).parts[:-1]))


def functions(path: Path, base: Path) -> Iterator[dict[str, Any]]:
    """Every function and method defined in a file, its docstring removed."""
    source = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a file of another Python's grammar (e.g. lib2to3 fixtures)
        return
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            skip = _docstring_lines(node)
            text = "".join(line for number, line in enumerate(lines[first - 1 : node.end_lineno], start=first) if number not in skip)
            yield {"code": _dedent(text), "where": f"{path.relative_to(base).as_posix()}:{node.lineno}"}


def _docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int]:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return set()


def _dedent(text: str) -> str:
    rows = text.splitlines()
    indent = min((len(r) - len(r.lstrip()) for r in rows if r.strip()), default=0)
    return "\n".join(r[indent:] for r in rows).strip() + "\n"


def function_rows(
    packages: Sequence[str] = PACKAGES, *, per_package: int = 200, test_share: float = 0.2, seed: int = 0, root: Path | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) rows; see the module docstring."""
    if len(packages) < 2:
        raise InputError("the standard-library task needs at least two packages to tell apart")
    base = root or stdlib_root()
    rng = random.Random(seed)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for package in packages:
        files = package_files(package, base)
        rng.shuffle(files)
        found = [[{**row, "package": package} for row in functions(path, base)] for path in files]
        # Whole files go to the test split, in the seeded order, until it holds about `test_share` of the
        # package's functions; a file that would take it past twice that stays in training.
        total, held = sum(map(len, found)), 0
        split: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for rows in found:
            to_test = held < test_share * total and held + len(rows) <= 2 * test_share * total
            held += len(rows) if to_test else 0
            split[to_test] += rows
        share = max(1, round(per_package * test_share))
        for rows, count, target in ((split[False], per_package - share, train), (split[True], share, test)):
            if not rows:
                raise InputError(f"package {package!r} has no functions for one split; choose a larger package")
            target += rng.sample(rows, min(count, len(rows)))
    return train, test


def write_function_rows(folder: str | Path, **settings: Any) -> tuple[Path, Path]:
    """train.jsonl and test.jsonl in `folder` (created); `settings` as for `function_rows`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in zip(("train", "test"), function_rows(**settings)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


# Language modelling on source code: training packages, and others held out whole for the test split.
LM_TRAIN_PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "urllib", "xml")
LM_TEST_PACKAGES = ("json", "unittest")


def source_rows(
    packages: Sequence[str], *, chunk_lines: int = 12, per_package: int = 400, seed: int = 0, root: Path | None = None,
) -> list[dict[str, Any]]:
    """Consecutive lines of the packages' source files, `chunk_lines` at a time (blank-only chunks left
    out), at most `per_package` chunks of each package drawn in a seeded order: `{"text": …, "where": "pkg/file.py:1"}`."""
    if chunk_lines < 1 or per_package < 1:
        raise InputError(f"chunk_lines and per_package must be ≥ 1 (got {chunk_lines}, {per_package})")
    base = root or stdlib_root()
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for package in packages:
        chunks = []
        for path in package_files(package, base):
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for start in range(0, len(lines), chunk_lines):
                text = "\n".join(lines[start : start + chunk_lines]).strip("\n")
                if text.strip():
                    chunks.append({"text": text + "\n", "where": f"{path.relative_to(base).as_posix()}:{start + 1}"})
        rows += rng.sample(chunks, min(per_package, len(chunks)))
    return rows


def write_source_rows(
    folder: str | Path, train_packages: Sequence[str] = LM_TRAIN_PACKAGES, test_packages: Sequence[str] = LM_TEST_PACKAGES, **settings: Any
) -> tuple[Path, Path]:
    """train.jsonl (chunks of `train_packages`) and test.jsonl (of `test_packages`, none shared) in `folder`;
    `settings` as for `source_rows`."""
    if set(train_packages) & set(test_packages):
        raise InputError(f"packages {sorted(set(train_packages) & set(test_packages))} are in both splits; hold test packages out whole")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, packages in (("train", train_packages), ("test", test_packages)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in source_rows(packages, **settings)), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--source"]
    if "--source" in sys.argv[1:]:  # the language-modelling data of recipes/lm-stdlib.yaml
        written = write_source_rows(arguments[0] if arguments else "runs/data/stdlib-source")
    else:
        written = write_function_rows(arguments[0] if arguments else "runs/data/stdlib-functions")
    print(f"wrote {written[0]} and {written[1]}")
