"""The runner: teacher → student → stages (compress step ↔ recover) → report.

Every step ends with an evaluation, a StepRecord and an atomic checkpoint, so a
run can be resumed after its last finished step with identical results: each
step draws its randomness from `phase_seed(stage, step)` alone, never from what
ran before it."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader

from edgekd.version import __version__
from edgekd.bench.environment import environment
from edgekd.data import DataBundle, load_data
from edgekd.data.views import views_from
from edgekd.distributed import Distributed
from edgekd.distill import DistillConfig, Objective, Phase, TeacherConfig, TrainConfig, fit
from edgekd.errors import InputError
from edgekd.gate import evaluate_gates
from edgekd.metrics import accuracy, measure
from edgekd.models import build_model, load_state_dict_file
from edgekd.prune import ChannelPruner, PruneConfig
from edgekd.recipe import PlannedStage, Recipe
from edgekd.records import Artefacts, DatasetSummary, Report, StepRecord, StudentRecord, TeacherRecord
from edgekd.report import write_reports
from edgekd.stage import Role, StepResult, View

CHECKPOINT_FORMAT = "edgekd.checkpoint/1"


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: {name!r} was asked for, but this PyTorch build sees no CUDA device; use device: auto or cpu")
    return device


@contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """One run per workdir: a lock file holding the owner's pid; a stale lock (dead pid) is taken over."""
    lock = workdir / ".lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            owner = lock.read_text().strip() if lock.exists() else ""
            pid_text, _, host = owner.partition("@")
            alive = host == socket.gethostname() and pid_text.isdigit() and _process_alive(int(pid_text))
            if alive:
                raise InputError(
                    f"workdir {str(workdir)!r} is in use by another edgekd run (pid {pid_text}; lock file {str(lock)!r}). "
                    "Wait for it to finish or choose another workdir (--set workdir=…)."
                ) from None
            lock.unlink(missing_ok=True)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()}@{socket.gethostname()}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    """One execution of a recipe in its workdir. Stages see it as a StageContext (edgekd.stage)."""

    def __init__(self, recipe: Recipe, *, console: Console | None = None, quiet: bool = False):
        self.recipe = recipe
        self.workdir = recipe.workdir_path
        self.seed = recipe.seed
        self.device = resolve_device(recipe.device)
        self.console = console or Console(quiet=quiet)
        self.data: DataBundle
        self.teacher: nn.Module
        self.student: nn.Module
        self.report: Report
        self.artefacts = Artefacts()  # what export and bench stages produced so far
        self.progress: Progress | None = None
        views = views_from(recipe.data.views)
        self.student_view: View = views[recipe.student.input]
        self.teacher_view: View = views[recipe.teacher.input]
        self._teachers: dict[str, nn.Module] = {}
        self._assistants: dict[str, nn.Module] = {}
        self._teacher_logits: np.ndarray | None = None
        self.dist = Distributed()

    # ---- the StageContext: what stages use ----------------------------------------
    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def recipe_hash(self) -> str:
        return self.recipe.fingerprint()

    def view(self, role: Role) -> View:
        return self.teacher_view if role == "teacher" else self.student_view

    def phase_seed(self, stage_index: int, step: int) -> int:
        """A seed that depends only on the recipe seed and the step's position."""
        digest = hashlib.sha256(f"{self.seed}:{stage_index}:{step}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def loader(self, split: str, shuffle: bool = False, seed: int | None = None, *, indexed: bool = False, sharded: bool = False) -> DataLoader:
        """The run's loader of a split: its batch size; `indexed` adds sample positions (cache keys);
        `sharded` gives this rank its part under data parallelism."""
        size = self.recipe.data.batch_size if split == "train" else self.recipe.data.eval_batch_size
        shard = (self.dist.rank, self.dist.world_size) if sharded else (0, 1)
        return self.data.loader(split, size, shuffle=shuffle, seed=self.seed if seed is None else seed, indexed=indexed, shard=shard)

    def example_input(self, batch: int = 1, role: Role = "student") -> torch.Tensor:
        """Real test inputs as `role` sees them (its view), on the run's device."""
        return self.view(role)(self.data.test.tensors[0][:batch].to(self.device))

    def evaluate(self, model: nn.Module, split: str = "test", role: Role = "student") -> float:
        return accuracy(model, self.loader(split), self.device, self.view(role))

    def measure(self, model: nn.Module, role: Role = "student") -> dict[str, int]:
        return measure(model, self.example_input(role=role))

    def train(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        seed: int,
        description: str,
        after_backward: Callable[[nn.Module], None] | None = None,
        teacher: nn.Module | None | str = "default",
        stop_after_epoch: int | None = None,
    ) -> list[float]:
        """Train `model` in place: the configured distillation from the run's teacher for a
        DistillConfig, plain cross-entropy for a TrainConfig (or with teacher=None)."""
        torch.manual_seed(seed)
        distill = config if isinstance(config, DistillConfig) else DistillConfig(**config.model_dump(), method="ce", alpha=0)
        mentor = self.teacher if teacher == "default" and isinstance(config, DistillConfig) else teacher
        runtime = self.recipe.runtime
        cache = self.teacher_logits if runtime.teacher_cache and mentor is not None and mentor is self.teacher else None
        phase = Phase(
            distill, model, mentor if isinstance(mentor, nn.Module) else None, self.device, seed,
            student_view=self.student_view if mentor is not None else self.teacher_view,
            teacher_view=self.teacher_view, source=self, teacher_logits_cache=cache,
        )
        loader = self.loader("train", shuffle=True, seed=seed, indexed=cache is not None, sharded=True)
        objective = Objective(phase, next(iter(loader))[0][:8].to(self.device))
        if cache is not None and phase.teacher_taps:
            self.console.print(f"{description}: the teacher runs live (not from its logit cache): a method reads teacher features")
        return fit(model, objective, loader, config, device=self.device, description=description,
                   progress=self.progress, after_backward=after_backward, stop_after_epoch=stop_after_epoch,
                   precision=runtime.precision, channels_last=runtime.channels_last, dist=self.dist)

    def teacher_logits(self) -> np.ndarray:
        """The teacher's logits for every training sample (its view), computed once per teacher and data,
        kept in the workdir as a memory-mapped float16 file (float32 when values exceed float16's range)."""
        if self._teacher_logits is None:
            digest = hashlib.sha256()
            for tensor in self.teacher.state_dict().values():
                digest.update(tensor.detach().cpu().numpy().tobytes())
            digest.update(json.dumps([self.recipe.teacher.input, self.recipe.data.model_dump(mode="json", exclude={"batch_size", "eval_batch_size"}), self.seed], sort_keys=True).encode())
            path = self.workdir / f"teacher-logits-{digest.hexdigest()[:12]}.npy"
            if path.is_file():
                self._teacher_logits = np.load(path, mmap_mode="r")
            else:  # every rank computes the same logits; rank 0 keeps them for later phases and runs
                self._teacher_logits = self._compute_teacher_logits()
                self._write(path, lambda tmp: np.save(tmp.open("wb"), self._teacher_logits))
        return self._teacher_logits

    @torch.no_grad()
    def _compute_teacher_logits(self) -> np.ndarray:
        chunks = [self.teacher(self.teacher_view(x.to(self.device))).cpu() for x, _ in self.loader("train")]
        logits = torch.cat(chunks)
        safe = float(logits.abs().max()) < torch.finfo(torch.float16).max / 2
        return logits.numpy().astype(np.float16 if safe else np.float32)

    def obtain_teacher(self, config: TeacherConfig) -> nn.Module:
        """A teacher loaded from its checkpoint, or trained once and cached in the workdir by its settings."""
        key = self._cache_key(config.model_dump(mode="json"))
        if key in self._teachers:
            return self._teachers[key]
        torch.manual_seed(self.seed)
        model = self._build(config.model)
        cache = self.workdir / f"teacher-{key}.pt"
        if config.checkpoint:
            load_state_dict_file(model, config.checkpoint)
        elif cache.is_file():
            load_state_dict_file(model, cache)
            self.console.print(f"teacher {config.model}: reusing the trained teacher cached in {cache}")
        else:
            assert config.train is not None
            self.train(model, config.train, seed=self.seed, description=f"teacher {config.model}", teacher=None,
                       stop_after_epoch=config.checkpoint_epoch)
            self._write(cache, lambda tmp: torch.save(model.state_dict(), tmp))
        for p in model.parameters():
            p.requires_grad_(False)
        self._teachers[key] = model.eval()
        return model

    def assistant(self, config: Any) -> nn.Module:
        """A teacher assistant (TA method): a given model or the teacher pruned to a MACs fraction,
        trained by the teacher with the recipe's distillation settings; built once per run."""
        key = self._cache_key(config.model_dump(mode="json"))
        if key not in self._assistants:
            torch.manual_seed(self.seed)
            if config.assistant:
                model = self._build(config.assistant, "teacher")
            else:
                model = copy.deepcopy(self.teacher).requires_grad_(True)
                pruner = ChannelPruner(model, self.example_input(role="teacher"), PruneConfig(target_macs=config.assistant_macs))
                pruner.prune_to(config.assistant_macs * self.report.teacher.macs)
            model.requires_grad_(True)
            settings = DistillConfig.model_validate(
                {**self.recipe.distill.model_dump(), "method": "kd", "epochs": config.assistant_epochs}
            )
            self.train(model, settings, seed=self.seed + 7, description="teacher assistant")
            for p in model.parameters():
                p.requires_grad_(False)
            self._assistants[key] = model.eval()
        return self._assistants[key]

    def _cache_key(self, settings: dict[str, Any]) -> str:
        data = self.recipe.data
        key = json.dumps(
            {"model": settings, "seed": self.seed, "train_batch_size": data.batch_size,
             "data": data.model_dump(mode="json", exclude={"batch_size", "eval_batch_size"})},
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    # ---- the pipeline -----------------------------------------------------------
    def execute(self, resume: bool = False) -> Report:
        self.dist = Distributed.from_environment(self.device)
        self.device = self.dist.device_for_rank(self.device)
        if not self.dist.is_main:  # one voice: rank 0 prints and writes
            self.console.quiet = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            with workdir_lock(self.workdir) if self.dist.is_main else nullcontext(), self._progress():
                self.prepare()
                done = self._resume() if resume else self._start_fresh()
                for planned in self.recipe.plan:
                    for step in range(1, planned.stage.num_steps() + 1):
                        if (planned.index, step) in done:
                            continue
                        self._run_step(planned, step)
                self._finish()
        finally:
            self.dist.close()
        return self.report

    def export_latest(self, config: Any) -> Artefacts:
        """Rebuild the student of the last finished step and export it (see `edgekd export RUN`)."""
        from edgekd.export.stage import ExportStage

        with workdir_lock(self.workdir), self._progress():
            self.prepare()
            if not self._progress_file.is_file():
                raise InputError(f"{str(self.workdir)!r} has no finished step to export yet")
            self._resume()
            return ExportStage(config, len(self.recipe.plan)).apply(self, 1).artefacts

    @contextmanager
    def _progress(self) -> Iterator[None]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"), TimeElapsedColumn())
        with Progress(*columns, console=self.console, disable=self.console.quiet) as progress:
            self.progress = progress
            try:
                yield
            finally:
                self.progress = None

    def prepare(self) -> None:
        """Load the data and obtain the teacher (trained once, then cached); fills the report's header."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.recipe.data
        self.data = load_data(
            data.dataset, seed=self.seed, root=data.root, val_split=data.val_split,
            test_split=data.test_split, limit=data.limit, options=data.options,
        )
        self.teacher = self.obtain_teacher(self.recipe.teacher)
        self.report = Report(
            name=self.recipe.name,
            recipe_hash=self.recipe.fingerprint(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            edgekd=__version__,
            workdir=str(self.workdir),
            world_size=self.dist.world_size,
            dataset=DatasetSummary.model_validate(self.data.summary()),
            teacher=TeacherRecord(model=self.recipe.teacher.model, **self._evaluate_and_measure(self.teacher, "teacher")),
            environment=environment(),
        )
        self.console.print(f"teacher {self.recipe.teacher.model}: test accuracy {self.report.teacher.accuracy:.2%}")

    def _evaluate_and_measure(self, model: nn.Module, role: Role = "student") -> dict[str, Any]:
        return {"accuracy": self.evaluate(model, role=role), **self.measure(model, role)}

    def _build(self, spec: str, role: str = "teacher") -> nn.Module:
        view = self.student_view if role == "student" else self.teacher_view
        sample = view(self.data.test.tensors[0][:1])
        return build_model(
            spec, in_channels=sample.shape[1], num_classes=self.data.num_classes, image_size=sample.shape[-1]
        ).to(self.device)

    def _initial_student(self) -> nn.Module:
        config = self.recipe.student
        torch.manual_seed(self.seed)
        if config.model == "teacher":
            student = copy.deepcopy(self.teacher)
            for p in student.parameters():
                p.requires_grad_(True)
        else:
            student = self._build(config.model, "student")
        if config.checkpoint:
            load_state_dict_file(student, config.checkpoint)
        return student

    # ---- checkpoints ------------------------------------------------------------
    @property
    def _progress_file(self) -> Path:
        return self.workdir / "progress.json"

    @property
    def _checkpoint_dir(self) -> Path:
        return self.workdir / "checkpoints"

    def _start_fresh(self) -> set[tuple[int, int]]:
        if self.dist.is_main:
            self._progress_file.unlink(missing_ok=True)
            for old in self._checkpoint_dir.glob("*.pt"):
                old.unlink()
        self._write_recipe()
        self.student = self._initial_student()
        self._restores: list[dict[str, Any]] = []
        self.artefacts = Artefacts()
        self._write_report()
        return set()

    def _write_recipe(self) -> None:
        """recipe.json is what `edgekd export RUN` rebuilds the student from: always the recipe that ran last."""
        self._write_json(self.workdir / "recipe.json", self.recipe.model_dump(mode="json"))

    def _resume(self) -> set[tuple[int, int]]:
        if not self._progress_file.is_file():
            self.console.print(f"resume: no finished step in {self.workdir}; starting from the beginning")
            return self._start_fresh()
        progress = json.loads(self._progress_file.read_text())
        finished_stages = 1 + max(index for index, _ in progress["done"])
        if progress.get("stage_hashes", [])[finished_stages - 1 : finished_stages] != [self.recipe.fingerprint(finished_stages)]:
            raise InputError(
                f"resume: the recipe changed since the run in {str(self.workdir)!r} started: its top-level settings "
                f"or its first {finished_stages} stage(s), which have finished steps, hash differently, so its "
                "checkpoints cannot continue it (stages may only be appended). "
                "Run without --resume to start over, or use another workdir."
            )
        checkpoint_path = self._checkpoint_dir / progress["checkpoint"]
        try:
            saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(f"resume: checkpoint {str(checkpoint_path)!r} cannot be read ({exc}); run without --resume") from None
        self.student = self._initial_student()
        plan = {p.index: p for p in self.recipe.plan}
        for restore in saved["restores"]:
            plan[restore["stage_index"]].stage.restore(self, restore["state"])
        self.student.load_state_dict(saved["student"])
        self.student.to(self.device)
        self._write_recipe()  # only once the checkpoint is known to continue it
        self._restores = list(saved["restores"])
        self.report.steps = [StepRecord.from_json(record) for record in json.loads(saved["records"])]
        self.artefacts = Artefacts.from_json(json.loads(saved["report"]))
        self.report.apply(self.artefacts)
        done = {tuple(pair) for pair in progress["done"]}
        self.console.print(f"resume: {len(done)} finished step(s) restored from {checkpoint_path.name}")
        return done  # type: ignore[return-value]

    def _checkpoint(self, planned: PlannedStage, step: int) -> None:
        name = f"stage{planned.index:02d}-step{step:03d}.pt"
        payload = {
            "format": CHECKPOINT_FORMAT,
            "student": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
            "restores": self._restores,
            "records": json.dumps([record.to_json() for record in self.report.steps]),
            "report": json.dumps(self.artefacts.to_json()),
        }
        self._checkpoint_dir.mkdir(exist_ok=True)
        if not self.dist.is_main:
            return
        atomic_write_bytes(self._checkpoint_dir / name, lambda tmp: torch.save(payload, tmp))
        previous = json.loads(self._progress_file.read_text()) if self._progress_file.is_file() else {"done": []}
        done = previous["done"] + [[planned.index, step]]
        # One hash per stage prefix (the last is the whole recipe's): resume checks the finished prefix.
        stage_hashes = [self.recipe.fingerprint(count) for count in range(1, len(self.recipe.plan) + 1)]
        atomic_write_json(self._progress_file, {"stage_hashes": stage_hashes, "checkpoint": name, "done": done})
        stale = previous.get("checkpoint")
        if stale and stale != name:
            (self._checkpoint_dir / stale).unlink(missing_ok=True)

    # ---- one step ---------------------------------------------------------------
    def _run_step(self, planned: PlannedStage, step: int) -> None:
        stage, steps = planned.stage, planned.stage.num_steps()
        label = f"{planned.key} {step}/{steps}" if steps > 1 else planned.key
        seed = self.phase_seed(planned.index, step)
        started = time.perf_counter()
        torch.manual_seed(seed)
        # Artefact stages (export, bench) run once, on rank 0: their files and timings are not per rank.
        result = stage.apply(self, step) if stage.compresses or self.dist.is_main else StepResult()
        self.dist.barrier()
        self._restores.append({"stage_index": planned.index, "step": step, "state": result.state})
        if stage.compresses:
            measured = self._recover_and_measure(planned, step, label, seed)
            record = StepRecord.model_validate({**measured, **result.record, "seconds": round(time.perf_counter() - started, 3)})
            self.report.steps.append(record)
            before = record.accuracy_before_recovery
            self.console.print(
                f"{label}: accuracy {record.accuracy:.2%}"
                + (f" (before recovery {before:.2%})" if before is not None else "")
                + f", MACs {record.macs:,}, params {record.params:,}"
            )
        self.artefacts = self.artefacts.merged(result.artefacts)
        self.report.apply(result.artefacts)
        self._checkpoint(planned, step)
        self._write_report()

    def _recover_and_measure(self, planned: PlannedStage, step: int, label: str, seed: int) -> dict[str, Any]:
        """Recover the student after a compression step; the StepRecord fields the runner measures."""
        recover = planned.recover
        trains = recover is not None and recover.epochs > 0
        before = self.evaluate(self.student) if trains else None
        started = time.perf_counter()
        if trains:
            assert recover is not None
            self.train(self.student, recover, seed=seed, description=label)
        return {
            "recovery_epochs": recover.epochs if recover else 0,
            "recovery_seconds": round(time.perf_counter() - started, 3),
            "stage": planned.key,
            "stage_index": planned.index,
            "step": step,
            "steps": planned.stage.num_steps(),
            "accuracy_before_recovery": before,
            **self._evaluate_and_measure(self.student),
        }

    def _finish(self) -> None:
        student_spec = self.recipe.student.model
        final = self.report.steps[-1] if self.report.steps else None
        metrics = final.model_dump(include={"accuracy", "macs", "params", "size_bytes"}) if final else {
            "accuracy": self.evaluate(self.student), **self.measure(self.student)
        }
        model = self.recipe.teacher.model if student_spec == "teacher" else student_spec
        self.report.student = StudentRecord(model=model, **metrics)
        self.report.apply(self.artefacts)
        self.report.complete = True
        gates = self.recipe.gates
        if gates is not None and gates.has_thresholds():
            self.report.gates_config = gates
            self.report.gates = evaluate_gates(self.report, gates)
        self._write_report()
        if self.dist.is_main:
            write_reports(self.workdir, self.report)

    def _write_report(self) -> None:
        self._write_json(self.workdir / "report.json", self.report.to_json())

    def _write_json(self, path: Path, data: Any) -> None:
        if self.dist.is_main:
            atomic_write_json(path, data)

    def _write(self, path: Path, write: Callable[[Path], None]) -> None:
        """Atomic writes, from rank 0 only: the other ranks hold the same state."""
        if self.dist.is_main:
            atomic_write_bytes(path, write)


def compress(recipe: Recipe, *, resume: bool = False, console: Console | None = None, quiet: bool = False) -> Report:
    """Run a validated recipe; returns the report (also in `<workdir>/report.json`)."""
    return Run(recipe, console=console, quiet=quiet).execute(resume=resume)


__all__ = ["Run", "compress"]
