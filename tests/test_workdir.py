"""Run folders: edgekd writes only into folders it owns, never through links, atomically, one run at a time;
a full disk names the file."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import edgekd
from edgekd.errors import EdgekdError, InputError, WriteFailed
from edgekd.files import write_atomic, write_json
from edgekd.workdir import MARKER, workdir_lock
from tests.conftest import copy_run, tiny_recipe

FAST = {"teacher": {"model": "cnn(width=4)", "train": {"epochs": 1}}, "stages": []}


def cli(*args: str, env: dict[str, str] | None = None, limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """`edgekd ARGS` in a fresh process; `limit_bytes` caps the size of any file it writes (RLIMIT_FSIZE,
    with SIGXFSZ ignored, so writes past it fail with EFBIG as on a full disk)."""

    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "edgekd", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})},
        preexec_fn=cap if limit_bytes else None,
    )


def test_a_fresh_run_refuses_a_folder_it_did_not_create_and_deletes_nothing(tmp_path):
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    (project / "checkpoints" / "model_epoch90.pt").write_bytes(b"weeks of training")
    (project / "report.md").write_text("my notes")
    with pytest.raises(InputError, match=r"workdir .*project.* is not empty .* not an edgekd run folder"):
        edgekd.compress(tiny_recipe(project, **FAST), quiet=True)
    assert (project / "checkpoints" / "model_epoch90.pt").read_bytes() == b"weeks of training"
    assert (project / "report.md").read_text() == "my notes"
    assert sorted(p.name for p in project.iterdir()) == ["checkpoints", "report.md"]  # not even a lock or a marker


def test_a_symlinked_checkpoints_folder_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "stage00-step001.pt").write_bytes(b"not edgekd's")
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text("{}")  # even inside an edgekd run folder
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        edgekd.compress(tiny_recipe(run, **FAST), quiet=True)
    assert (elsewhere / "stage00-step001.pt").read_bytes() == b"not edgekd's"


def test_a_run_folder_keeps_what_edgekd_did_not_write_and_replaces_links_instead_of_writing_through_them(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    outside = tmp_path / "outside.md"
    outside.write_text("the link's target")
    (run / "report.md").unlink()
    (run / "report.md").symlink_to(outside)
    (run / "checkpoints" / "mine.pt").write_bytes(b"mine")
    (run / "notes.tmp").write_text("a user's file that merely ends in .tmp")
    stale = [run / ".report.json.4242.tmp", run / "checkpoints" / ".stage00-step001.pt.4242.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    recipe = json.loads((run / "recipe.json").read_text())
    edgekd.compress(recipe, quiet=True)  # a fresh run over the finished one
    assert outside.read_text() == "the link's target"
    assert not (run / "report.md").is_symlink() and "edgekd report" in (run / "report.md").read_text()
    assert (run / "checkpoints" / "mine.pt").read_bytes() == b"mine"
    assert (run / "notes.tmp").is_file()
    assert not any(path.exists() for path in stale)  # interrupted writes are swept at start
    assert [p.name for p in run.rglob(".*.tmp")] == []


def test_atomic_writes_create_their_temporary_file_exclusively(tmp_path):
    target = tmp_path / "report.json"
    planted = tmp_path / f".report.json.{os.getpid()}.tmp"
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    planted.symlink_to(victim)
    write_json(target, {"ok": True})
    assert victim.read_text() == "untouched"
    assert json.loads(target.read_text()) == {"ok": True}


def test_non_finite_numbers_become_null_with_their_path(tmp_path):
    path = write_json(tmp_path / "r.json", {"latency": {"speedup": {"64": {"ratio": float("inf"), "ci": [1.0, float("nan")]}}}})
    strict = json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))
    assert strict["latency"]["speedup"]["64"] == {"ratio": None, "ci": [1.0, None]}
    assert strict["non_finite"] == {"latency.speedup.64.ratio": "inf", "latency.speedup.64.ci[1]": "nan"}


# ---------------------------------------------------------------- the lock

LOCK_WORKER = r"""
import sys, time
from pathlib import Path
from edgekd.errors import InputError
from edgekd.workdir import workdir_lock

base, me, trials = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def wait_for(path):
    while not path.exists():
        time.sleep(0.0005)

for trial in range(trials):
    folder = base / f"trial{trial}"
    (folder / f"ready-{me}").touch()
    wait_for(folder / "go")
    try:
        with workdir_lock(folder):
            (folder / f"holder-{me}").touch()
            (folder / f"done-{me}").touch()
            while len(list(folder.glob("done-*"))) < 4:  # hold until every process has tried
                time.sleep(0.0005)
    except InputError:
        (folder / f"done-{me}").touch()
    wait_for(folder / "next")
"""


def test_four_processes_racing_for_one_lock_never_both_hold_it(tmp_path):
    trials = 30
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    for trial in range(trials):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        if trial % 3 == 1:  # a stale lock left by a killed run
            (folder / ".lock").write_text(f"{dead}@{socket.gethostname()}")
        elif trial % 3 == 2:  # an old empty lock (an older edgekd killed between create and write)
            (folder / ".lock").touch()
            os.utime(folder / ".lock", (time.time() - 60, time.time() - 60))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", LOCK_WORKER, str(tmp_path), str(n), str(trials)], env=env, stderr=subprocess.PIPE)
        for n in range(4)
    ]
    try:
        for trial in range(trials):
            folder = tmp_path / f"trial{trial}"
            deadline = time.monotonic() + 60
            while len(list(folder.glob("ready-*"))) < 4:
                assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "a worker died"
                time.sleep(0.001)
            (folder / "go").touch()
            while len(list(folder.glob("done-*"))) < 4:
                assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "a worker died"
                time.sleep(0.001)
            (folder / "next").touch()
    finally:
        errors = [w.communicate(timeout=60)[1].decode() for w in workers]
    assert all(w.returncode == 0 for w in workers), errors
    holders = [len(list((tmp_path / f"trial{t}").glob("holder-*"))) for t in range(trials)]
    assert max(holders) == 1, holders  # never two holders
    assert min(holders) == 1, holders  # and a stale lock is taken over


def test_a_lock_from_another_host_is_refused_unless_forced(tmp_path):
    (tmp_path / ".lock").write_text("4242@another-host.example")
    with pytest.raises(InputError, match=r"another-host.*--force-unlock"):
        with workdir_lock(tmp_path):
            pass
    with workdir_lock(tmp_path, force=True):
        assert (tmp_path / ".lock").read_text().startswith(f"{os.getpid()}@")
    assert not (tmp_path / ".lock").exists()


def test_an_empty_lock_younger_than_a_few_seconds_is_held(tmp_path):
    (tmp_path / ".lock").touch()
    with pytest.raises(InputError, match="in use by another edgekd run"):
        with workdir_lock(tmp_path):
            pass
    assert (tmp_path / ".lock").exists()


# ---------------------------------------------------------------- system failures


def test_a_full_disk_names_the_file_and_exits_1_without_losing_the_previous_one(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    workdir = tmp_path / "run"
    recipe.write_text(yaml.safe_dump(tiny_recipe(workdir, teacher={"model": "resnet_s(width=8)", "train": {"epochs": 1}}, stages=[])))
    result = cli("compress", str(recipe), "--quiet", limit_bytes=16_000)  # the marker fits, the cached teacher does not
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "cannot write" in output and "teacher-" in output and ".pt" in output
    assert "ulimit" in output and "internal error" not in output and "report it" not in output and "Traceback" not in output
    assert not list(workdir.glob(".*.tmp"))


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous")
    script = (
        "import resource, signal, sys\n"
        "from edgekd.files import write_atomic\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
        f"write_atomic({str(target)!r}, b'x' * 1000)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "WriteFailed" in result.stderr and str(target) in result.stderr
    assert target.read_text() == "previous" and not list(tmp_path.glob(".*.tmp"))


def test_writing_to_a_folder_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        write_atomic(tmp_path, b"x")
    assert issubclass(WriteFailed, EdgekdError) and WriteFailed.exit_code == 1
