"""The runner: teacher → student → stages (compress step ↔ recover) → report.

Every step ends with an evaluation, a StepRecord and an atomic checkpoint, so a
run can be resumed after its last finished step with identical results: each
step draws its randomness from `phase_seed(stage, step)` alone, never from what
ran before it."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader

from edgekd import terminal
from edgekd.version import __version__
from edgekd.bench.environment import environment
from edgekd.data import DataBundle, TextBundle, load_data
from edgekd.data.text import TextOptions, text_options, with_training_targets
from edgekd.data.augment import FRESH_VIEWS, Augmenter, TrainBatches, make_augmenter, pool_view
from edgekd.data.views import views_from
from edgekd.distributed import Distributed
from edgekd.distill import DistillConfig, Objective, Phase, TeacherConfig, TrainConfig, fit
from edgekd.distill.cache import SoftLabelCache, TokenSoftLabels, storage_top_k, token_top_k
from edgekd.distill.generation_cache import CACHE_FORMAT, cached_generate, key_digest, module_digest, text_digest
from edgekd.distill.sequence import greedy_generate_fn
from edgekd.distill.stepbystep import Tokens
from edgekd.distill.stepbystep_method import LabelTask, label_task_bundle, split_examples, teacher_written
from edgekd.distill.topk_cache import TopKCache, TopKCacheWriter
from edgekd.distill.train import TrainingDiverged
from edgekd.errors import InputError, NotFinite
from edgekd.facts import IGNORE_INDEX, DataFacts
from edgekd.files import real_folder, serialized, sweep_temporaries, write_atomic, write_json
from edgekd.gate import evaluate_gates
from edgekd.metrics import accuracy, generation_metrics, measure
from edgekd.models import build_model, check_runs, load_state_dict_file, load_tensors
from edgekd.outputs import Inputs, logits_of, run_model
from edgekd.prune import ChannelPruner, PruneConfig, save_pretrained
from edgekd.prune.hf import is_hf_model
from edgekd.quant import float_model
from edgekd.recipe import PlannedStage, Recipe
from edgekd.records import Artefacts, DatasetSummary, Report, StepRecord, StudentRecord, TeacherCache, TeacherRecord, TeacherTargets
from edgekd.report import PLOT_DIR, write_reports
from edgekd.stage import Role, StepResult, View
from edgekd.workdir import claim_workdir, workdir_lock

CHECKPOINT_FORMAT = "edgekd.checkpoint/1"
CHECKPOINT_NAME = re.compile(r"^stage\d{2}-step\d{3}\.pt$")
CHECKPOINT_KEYS = {"student", "restores", "records", "report"}
PRETRAINED_DIR = "student-pretrained"  # a Hugging Face student, saved for from_pretrained
# Data settings that change no cached teacher or soft label: batch sizes, and the pool size (a view's
# draws depend on its number alone, and teacher training reads views beyond any pool).
NOT_IN_CACHE_KEYS = {"batch_size", "eval_batch_size", "augment_views"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: {name!r} was asked for, but this PyTorch build sees no CUDA device; use device: auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device: {name!r} was asked for, but this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 …)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device: {name!r} was asked for, but MPS (Apple GPUs) is not available here; use device: auto or cpu")
    return device


class Run:
    """One execution of a recipe in its workdir. Stages see it as a StageContext (edgekd.stage)."""

    def __init__(self, recipe: Recipe, *, console: Console | None = None, quiet: bool = False, force_unlock: bool = False):
        self.recipe = recipe
        self.force_unlock = force_unlock
        self.workdir = recipe.workdir_path
        self.seed = recipe.seed
        self.device = resolve_device(recipe.device)
        self.console = console or terminal.console(quiet=quiet)
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
        self._soft_labels: SoftLabelCache | None = None
        self._token_caches: dict[str, TokenSoftLabels] = {}  # by folder: one per training targets
        self._token_labels: TokenSoftLabels | None = None  # the one the last phase read
        self._teacher_answers: TextBundle | None = None
        self.augmenter: Augmenter | None = None
        self.dist = Distributed()
        # Step-by-step distillation: the label task beside the data, and what its rebuild after the teacher reads.
        self.label_task: LabelTask | None = None
        self._label_task_source: tuple[TextBundle, TextOptions, dict[str, Any]] | None = None

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

    def example_input(self, batch: int = 1, role: Role = "student") -> Inputs:
        """Real test inputs as `role` sees them (its view), on the run's device."""
        return self.view(role)(self.data.test.tensors[0][:batch].to(self.device))

    @property
    def facts(self) -> DataFacts:
        return self.data.facts

    @property
    def generates(self) -> bool:
        """Whether the data is generation text: per-token targets, scored per real target token."""
        return isinstance(self.data, TextBundle) and self.data.task != "classify"

    def evaluate(self, model: nn.Module, split: str = "test", role: Role = "student") -> float:
        """Test accuracy; for generation data the token accuracy on real target tokens."""
        return self.scores(model, split, role)["token_accuracy"] if self.generates else self._scored(
            lambda: accuracy(model, self.loader(split), self.device, self.view(role)), split, role
        )

    def scores(self, model: nn.Module, split: str = "test", role: Role = "student") -> dict[str, float]:
        """A generation model's token accuracy, teacher-forced exact match and perplexity on a split."""
        return self._scored(lambda: generation_metrics(model, self.loader(split), self.device, self.view(role)), split, role)

    def _scored(self, score: Callable[[], Any], split: str, role: Role) -> Any:
        try:
            return score()
        except NotFinite as exc:
            raise NotFinite(f"the {role} on the {split} split: {exc}") from None

    def validation_accuracy(self, model: nn.Module, role: Role = "student") -> float | None:
        """Accuracy on the validation split (None when the recipe keeps none: val_split 0)."""
        return self.evaluate(model, "val", role) if len(self.data.val) else None

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
        recovery = isinstance(config, DistillConfig)
        with self._training_targets(config) if recovery else nullcontext():
            return self._train(model, config, seed=seed, description=description, after_backward=after_backward,
                               teacher=teacher, stop_after_epoch=stop_after_epoch)

    def _train(
        self, model: nn.Module, config: TrainConfig, *, seed: int, description: str,
        after_backward: Callable[[nn.Module], None] | None, teacher: nn.Module | None | str, stop_after_epoch: int | None,
    ) -> list[float]:
        torch.manual_seed(seed)
        recovery = isinstance(config, DistillConfig)
        distill = config if recovery else DistillConfig(**config.model_dump(), method="ce", alpha=0)
        mentor = self.teacher if teacher == "default" and recovery else teacher
        runtime = self.recipe.runtime
        cache = None
        if runtime.teacher_cache and mentor is not None and mentor is self.teacher:
            cache = self.token_soft_labels if self.generates else self.soft_labels
        phase = Phase(
            distill, model, mentor if isinstance(mentor, nn.Module) else None, self.device, seed,
            student_view=self.student_view if mentor is not None else self.teacher_view,
            teacher_view=self.teacher_view, source=self, soft_labels=cache,
        )
        batches = self.training_batches(seed, recovery=recovery)
        objective = Objective(phase, next(iter(batches))[0][:8])
        if cache is not None and phase.teacher_taps:
            self.say(f"{description}: the teacher runs live (not from its logit cache): a method reads teacher features")
        return fit(model, objective, batches, config, device=self.device, description=description,
                   progress=self.progress, after_backward=after_backward, stop_after_epoch=stop_after_epoch,
                   precision=runtime.precision, channels_last=runtime.channels_last, dist=self.dist)

    def training_batches(self, seed: int, *, recovery: bool) -> TrainBatches:
        """A training phase's batches (this rank's share), augmented when the recipe says so: a
        recovery phase reads views from the pool of `data.augment_views` (those the teacher cache
        stores), teacher training a fresh view every epoch."""
        pool = self.recipe.data.augment_views
        view_of_epoch = (lambda epoch: pool_view(seed, epoch, pool)) if recovery else (lambda epoch: FRESH_VIEWS + epoch - 1)
        loader = self.loader("train", shuffle=True, seed=seed, indexed=True, sharded=True)
        return TrainBatches(loader, self.augmenter, view_of_epoch, self.device)

    def soft_labels(self) -> SoftLabelCache:
        """The teacher's logits for every training sample in every view a phase reads (its input view),
        each view computed once per teacher and data and kept in a folder of the workdir."""
        if self._soft_labels is None:
            runtime = self.recipe.runtime
            top_k = storage_top_k(runtime.teacher_cache_top_k, self.data.num_classes)
            key = self._teacher_data_key(top_k, runtime.teacher_cache_precision)
            # Every rank computes the views it reads; rank 0 keeps them for later phases and runs.
            self._soft_labels = SoftLabelCache(
                self.workdir / f"soft-labels-{key}", self._teacher_outputs,
                num_samples=len(self.data.train), num_classes=self.data.num_classes, top_k=top_k,
                precision=runtime.teacher_cache_precision, write=self._write, say=self.say,
            )
        return self._soft_labels

    def token_soft_labels(self) -> TokenSoftLabels:
        """Generation data: the teacher's top-k next-token log-probabilities at every real target token of
        the training split (`runtime.teacher_cache_top_k`), computed once per (teacher weights, data, k)
        into `<workdir>/teacher-topk-<key>/` and reused by later phases and resumed runs. A folder that is
        damaged or does not fit this data is said so and built again."""
        k = token_top_k(self.recipe.runtime.teacher_cache_top_k, self.data.facts.vocab_size or 0)
        folder = self.workdir / f"teacher-topk-{self._teacher_data_key('top-k tokens', k)}"
        if folder.name not in self._token_caches:
            cache = self._reusable_token_cache(folder, k) if self.dist.is_main else None
            origin = "reused"
            if cache is None and self.dist.is_main:
                cache = self._build_token_cache(folder, k)
                origin = f"built in {cache.meta['build_seconds']:.1f} s"
            self.dist.barrier()  # the other ranks read what rank 0 built
            cache = cache or TopKCache.open(folder)
            self._token_caches[folder.name] = TokenSoftLabels(cache)
            summary = self._token_caches[folder.name].summary()
            self.say(
                f"teacher cache {folder.name} ({origin}): top-{k} of {cache.info.vocab_size} per token, "
                f"{summary['tokens']:,} tokens, {summary['bytes_per_token']:g} bytes/token; recovery reads it, not the teacher"
            )
        self._token_labels = self._token_caches[folder.name]
        return self._token_labels

    def _reusable_token_cache(self, folder: Path, k: int) -> TopKCache | None:
        """The token cache in `folder` if it is whole and fits this data (one sequence per training sample,
        each with as many tokens as its real targets); None to build it."""
        if not folder.exists():
            return None
        try:
            cache = TopKCache.open(folder)
            counts = (self.data.train.tensors[1] != IGNORE_INDEX).sum(dim=1).numpy()
            if (cache.info.k, cache.info.vocab_size) != (k, self.data.facts.vocab_size) or len(cache) != len(counts) \
                    or not (np.diff(cache.offsets) == counts).all():
                raise InputError(f"top-k cache {str(folder)!r} does not fit this run's training split or k")
        except InputError as exc:
            self.say(f"{exc}; building it again")
            return None
        return cache

    @torch.no_grad()
    def _build_token_cache(self, folder: Path, k: int) -> TopKCache:
        started = time.perf_counter()
        writer = TopKCacheWriter(folder, k=k, vocab_size=self.data.facts.vocab_size or 0)
        try:
            expected = 0
            for x, y, index in self.loader("train", indexed=True):
                assert int(index[0]) == expected, "the cache stores the training split in order"
                logits = logits_of(run_model(self.teacher, self.teacher_view(x.to(self.device))))
                writer.add(logits, y.to(self.device) != IGNORE_INDEX)
                expected += len(index)
        except BaseException:
            writer.abort()
            raise
        return writer.close({"build_seconds": round(time.perf_counter() - started, 3)})

    @contextmanager
    def _training_targets(self, config: DistillConfig) -> Iterator[None]:
        """A phase with `targets: teacher` trains on the teacher's answers (the training split swapped for
        the phase; evaluation, before and after, reads the data's)."""
        if config.targets != "teacher":
            yield
            return
        data = self.data
        self.data = self.teacher_answers()
        try:
            yield
        finally:
            self.data = data

    def teacher_answers(self) -> TextBundle:
        """The data with the teacher's greedy answers to the training prompts as training targets (sequence-level
        KD, Kim & Rush 2016), made once per run from the generation cache (`_teacher_generations`)."""
        if self._teacher_answers is None:
            data = self.data
            assert isinstance(data, TextBundle) and data.options is not None and data.options.target is not None
            answers, counts, folder, max_new = self._teacher_generations(data)
            self._teacher_answers = with_training_targets(data, answers)
            tokenizer = data._tokenizer
            references = [tokenizer.decode(ids) for ids in tokenizer.encode([str(r[data.options.target]) for r in data.rows["train"]], special_tokens=False)]
            record = TeacherTargets(
                folder=str(folder.relative_to(self.workdir)), bytes=sum(f.stat().st_size for f in folder.iterdir()),
                replaced=len(answers), differing=sum(a != r for a, r in zip(answers, references)),
                generated=counts["generated"], reused=counts["reused"], max_new_tokens=max_new,
            )  # fmt: skip
            self.say(
                f"teacher answers: {record.replaced} training targets are the teacher's greedy generations "
                f"({record.differing} differ from the data's; {record.generated} generated, {record.reused} reused) in {record.folder}"
            )
            targets = Artefacts(teacher_targets=record)
            self.artefacts = self.artefacts.merged(targets)  # kept with the checkpoint
            self.report.apply(targets)
        return self._teacher_answers

    def _teacher_generations(self, data: TextBundle) -> tuple[list[str], dict[str, int], Path, int]:
        """The teacher's greedy answer (text) to each training prompt, generated in batches once per (teacher
        weights, tokenizer, prompts, limits) into `<workdir>/teacher-generations/<key>/` and reused by later
        phases and resumed runs; with the cache's counts, its folder and the answers' token limit. Answers get
        at most as many tokens as the longest training target (within max_length); a causal prompt too long
        for the rest gives way from its start, as the data's prompts do."""
        assert data.options is not None
        options, tokenizer = data.options, data._tokenizer
        assert tokenizer.eos_id is not None, "generation data has an end token (checked when it is encoded)"
        seq2seq = options.layout == "seq2seq"
        longest = int((data.train.tensors[1] != IGNORE_INDEX).sum(dim=1).max())
        max_new = max(1, min(longest, data.max_length - 1))
        room = data.max_length - 1 if seq2seq else data.max_length - max_new  # prompt tokens the model can take

        def encode(text: str) -> list[int]:
            ids = tokenizer.encode([text], special_tokens=False)[0]
            return ids[:room] if seq2seq else ids[-room:]

        tokens = Tokens(encode=encode, decode=tokenizer.decode, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id,
                        decoder_start_id=data.facts.decoder_start_id)
        generate = greedy_generate_fn(self.teacher, tokens, "seq2seq" if seq2seq else "decoder", max_new_tokens=max_new)
        prompts = [str(row[options.input]) for row in data.rows["train"]]
        key = {
            "format": CACHE_FORMAT, "teacher": module_digest(self.teacher), "data": text_digest(prompts),
            "prompting": {"decoding": "greedy", "layout": options.layout, "max_new_tokens": max_new, "prompt_tokens": room,
                          "tokenizer": hashlib.sha256(tokenizer.backend.to_str().encode()).hexdigest()},
        }  # fmt: skip
        folder = self.workdir / "teacher-generations" / key_digest(key)[:16]

        def answer() -> tuple[list[str], dict[str, int]]:
            return cached_generate(generate, prompts, folder, batch_size=self.recipe.data.eval_batch_size,
                                   progress=self.progress, description="teacher answers (sequence-level KD)", key=key)

        if self.dist.is_main:  # rank 0 generates; the others read its files
            answers, counts = answer()
        self.dist.barrier()
        if not self.dist.is_main:
            answers, counts = answer()
        return answers, counts, folder, max_new

    def _teacher_data_key(self, *settings: Any) -> str:
        """A digest of the teacher's weights, the data and `settings`: the name of a cache of teacher outputs."""
        data = self.recipe.data.model_dump(mode="json", exclude=NOT_IN_CACHE_KEYS)
        key = [module_digest(self.teacher), self.recipe.teacher.input, self.data.digest(), data, self.seed, *settings]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    @torch.no_grad()
    def _teacher_outputs(self, view: int | None) -> torch.Tensor:
        """The teacher's logits for the whole training split in `view` (None: the samples as stored)."""
        chunks = []
        for x, y, index in self.loader("train", indexed=True):
            x = x.to(self.device)
            if view is not None and self.augmenter is not None:
                x, _ = self.augmenter(x, y, index, view)
            chunks.append(logits_of(run_model(self.teacher, self.teacher_view(x))).float().cpu())
        return torch.cat(chunks)

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
        elif (cached := self._cached_teacher(model, cache)) is not None:
            model = cached
            self.say(f"teacher {config.model}: reusing the trained teacher cached in {cache}")
        else:
            assert config.train is not None
            block = "teacher.train" if config is self.recipe.teacher else f"train of teacher {config.model}"
            try:
                self.train(model, config.train, seed=self.seed, description=f"teacher {config.model}", teacher=None,
                           stop_after_epoch=config.checkpoint_epoch)
            except TrainingDiverged as exc:
                raise exc.blame(f"{block}.lr", f"{block}.grad_clip") from None
            self._write(cache, lambda handle: torch.save(model.state_dict(), handle))
        for p in model.parameters():
            p.requires_grad_(False)
        self._teachers[key] = model.eval()
        return model

    def _cached_teacher(self, model: nn.Module, cache: Path) -> nn.Module | None:
        """The cached teacher's weights in a copy of `model`; None when there is no cache or it is
        damaged (then the teacher trains again from `model`, untouched by a partial load)."""
        if not cache.is_file():
            return None
        cached = copy.deepcopy(model)
        try:
            load_state_dict_file(cached, cache)
        except InputError as exc:
            self.say(f"the cached teacher is damaged ({exc}); training it again")
            return None
        return cached

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
            try:
                self.train(model, settings, seed=self.seed + 7, description="teacher assistant")
            except TrainingDiverged as exc:
                raise exc.blame("distill.lr", "distill.grad_clip") from None
            for p in model.parameters():
                p.requires_grad_(False)
            self._assistants[key] = model.eval()
        return self._assistants[key]

    def _cache_key(self, settings: dict[str, Any]) -> str:
        data = self.recipe.data
        key = json.dumps(
            {"model": settings, "seed": self.seed, "train_batch_size": data.batch_size, "data_digest": self.data.digest(),
             "data": data.model_dump(mode="json", exclude=NOT_IN_CACHE_KEYS)},
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    # ---- the pipeline -----------------------------------------------------------
    def execute(self, resume: bool = False) -> Report:
        self.dist = Distributed.from_environment(self.device)
        self.device = self.dist.device_for_rank(self.device)
        if not self.dist.is_main:  # one voice: rank 0 prints and writes
            self.console.quiet = True
        try:
            if self.dist.is_main:
                # A folder holding a valid progress.json of an earlier edgekd is a run folder too (resume checks it).
                claim_workdir(self.workdir, adopt=resume and self._read_progress() is not None)
            with self._owned_workdir() if self.dist.is_main else nullcontext(), self._progress():
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

        if self._read_progress() is None:
            raise InputError(f"{str(self.workdir)!r} has no finished step to export yet")
        claim_workdir(self.workdir, adopt=True)
        with self._owned_workdir(), self._progress():
            self.prepare()
            self._resume()
            return ExportStage(config, len(self.recipe.plan)).apply(self, 1).artefacts

    @contextmanager
    def _owned_workdir(self) -> Iterator[None]:
        """Hold the workdir's lock; sweep what interrupted writes left behind."""
        with workdir_lock(self.workdir, force=self.force_unlock):
            sweep_temporaries(self.workdir, self._checkpoint_dir, self.workdir / PLOT_DIR)
            yield

    def say(self, text: str) -> None:
        """Print a line that may hold user strings (model specs, paths): never read as rich markup."""
        self.console.print(text, markup=False)

    @contextmanager
    def _progress(self) -> Iterator[None]:
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"), TimeElapsedColumn())
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
            test_split=data.test_split, limit=data.limit, options=self._data_options(), workdir=self.workdir,
        )
        if isinstance(self.data, TextBundle):
            if self.generates and (problems := self.recipe.methods_not_per_token()):  # a factory's text, which the recipe could not check
                raise InputError(f"data.dataset: {data.dataset!r} gives generation text; " + "; ".join(problems))
            if (blocks := self.recipe.teacher_target_blocks()) and (problem := self.recipe.teacher_targets_problem(self.data.options)):
                raise InputError(f"{blocks[0]}.targets: teacher {problem} (data.dataset {data.dataset!r})")
            # A seq2seq batch carries its decoder inputs behind the source, so one tensor is a whole model input.
            self.data = self._label_task_bundle(self.data) if self.recipe.step_by_step_terms() else self.data.packed()
            # Text has no image views (the recipe refuses them): both models read the token batch as
            # keyword arguments, through one shared function (cross-modal needs two different ones).
            self.student_view = self.teacher_view = self.data.model_inputs
        elif blocks := self.recipe.teacher_target_blocks():
            raise InputError(f"{blocks[0]}.targets: teacher replaces generation targets; data.dataset {data.dataset!r} gives none")
        self.augmenter = make_augmenter(data.augment, self.data, self.seed)  # checks its settings before anything trains
        self.teacher = self.obtain_teacher(self.recipe.teacher)
        self._check_shared_vocabulary()
        self._teacher_rationales()
        self.report = Report(
            name=self.recipe.name,
            recipe_hash=self.recipe.fingerprint(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            edgekd=__version__,
            workdir=str(self.workdir),
            world_size=self.dist.world_size,
            dataset=DatasetSummary.model_validate(self.data.summary()),
            teacher=TeacherRecord(
                model=self.recipe.teacher.model, **self._evaluate_and_measure(self.teacher, "teacher"),
                val_accuracy=self.validation_accuracy(self.teacher, "teacher"),
            ),
            environment=environment(),
        )
        if self.label_task is not None:
            self.report.rationales = self.label_task.summary
        perplexity = self.report.teacher.perplexity
        measured = "token accuracy" if self.generates else "accuracy"
        self.say(f"teacher {self.recipe.teacher.model}: test {measured} {self.report.teacher.accuracy:.2%}"
                 + (f", perplexity {perplexity:.3g}" if perplexity is not None else ""))

    # ---- step-by-step distillation (edgekd.distill.stepbystep_method) --------------
    def _data_options(self) -> dict[str, Any]:
        """data.options, with the rationale fields carried along (extras) when the rows hold them."""
        options, terms, rationales = self.recipe.data.options, self.recipe.step_by_step_terms(), self.recipe.rationales
        if not terms or rationales is None:
            return options
        settings = terms[0][1].settings()  # a tokenizer trained on the rows learns the prefixes and markers too
        marks = [settings.label_prefix, settings.rationale_prefix, settings.answer_marker, settings.explanation_marker]
        options = {**options, "vocabulary_text": [*options.get("vocabulary_text", ()), *marks]}
        if rationales.source != "data":
            return options
        fields = [rationales.field] + ([rationales.teacher_label_field] if terms[0][1].label_source == "teacher" else [])
        extras = list(options.get("extras", ()))
        return {**options, "extras": extras + [name for name in fields if name not in extras]}

    def _label_task_bundle(self, bundle: TextBundle) -> TextBundle:
        """The label task's data (packed), with rationales from the rows, or (source: teacher) without
        them until the teacher has written them."""
        rationales, settings = self.recipe.rationales, self.recipe.step_by_step_terms()[0][1].settings()
        assert rationales is not None  # the recipe refuses step-by-step without the block
        options = text_options(self._data_options())
        examples = split_examples(bundle, options, rationales)
        built, self.label_task = label_task_bundle(bundle, options, settings, examples, rationales=rationales.source == "data")
        self.label_task.summary = {"source": rationales.source, "examples": len(examples["train"])}
        self._label_task_source = (bundle, options, examples)
        return built

    def _teacher_rationales(self) -> None:
        """`rationales: {source: teacher}`: the teacher writes a rationale and a label for each training input
        (cached in the workdir), and the label task is rebuilt with them; the report counts what failed."""
        rationales = self.recipe.rationales
        if self.label_task is None or rationales is None or rationales.source != "teacher":
            return
        assert self._label_task_source is not None
        bundle, options, examples = self._label_task_source
        task = self.label_task
        built_in = not str(self.recipe.teacher.model).startswith("hf")
        kept, summary = teacher_written(
            self.teacher, examples["train"], rationales, task.tokens, task.architecture, self.workdir, self.progress,
            options.max_length if built_in else None,
        )  # fmt: skip
        self.data, self.label_task = label_task_bundle(bundle, options, task.config, {**examples, "train": kept}, rationales=True)
        self.label_task.summary = summary
        self.say(
            f"teacher rationales: {summary['kept']} of {len(examples['train'])} training inputs kept ({summary['generated']} generated, "
            f"{summary['reused']} from the cache); {summary['unparsed']} did not parse, {summary['disagreeing']} disagree with the "
            f"ground truth ({summary['dropped']} dropped)"
        )

    def _check_shared_vocabulary(self) -> None:
        """Token-level kd beside step-by-step compares teacher and student token by token: refuse a teacher
        whose vocabulary is not the data's."""
        if self.label_task is None:
            return
        vocabulary = self.data.facts.vocab_size
        with torch.no_grad():
            teacher_vocabulary = logits_of(run_model(self.teacher, self.example_input(role="teacher"))).shape[-1]
        blocks = [where for where, block in self.recipe.distill_blocks() if any(t.method == "kd" for t in block.terms)]
        if teacher_vocabulary != vocabulary and blocks:
            raise InputError(
                f"{blocks[0]}.method: token-level kd beside step-by-step needs teacher and student to share a vocabulary; "
                f"the teacher {self.recipe.teacher.model} writes {teacher_vocabulary} tokens, the data's tokenizer has {vocabulary}. "
                "Drop the kd term (step-by-step alone needs no teacher logits) or use a teacher on the data's tokenizer."
            )

    def _label_scores(self, model: nn.Module) -> dict[str, float]:
        """Step-by-step: exact match of the labels the model writes for the test split's `predict:` prompts."""
        return {} if self.label_task is None else {"label_exact_match": self.label_task.model_exact_match(model)}

    def _evaluate_and_measure(self, model: nn.Module, role: Role = "student") -> dict[str, Any]:
        if self.generates:
            scores = self.scores(model, role=role)
            quality = {"accuracy": scores["token_accuracy"], "perplexity": scores["perplexity"]}
        else:
            quality = {"accuracy": self.evaluate(model, role=role)}
        return {**quality, **self.measure(model, role)}

    def _build(self, spec: str, role: str = "teacher") -> nn.Module:
        view = self.student_view if role == "student" else self.teacher_view
        sample = view(self.data.test.tensors[0][:1].to(self.device))
        if isinstance(self.data, TextBundle):
            model = build_model(spec, self.data.facts)
        else:  # the image size and channels as the model's view gives them
            model = build_model(spec, in_channels=sample.shape[1], num_classes=self.data.num_classes, image_size=sample.shape[-1])
        model = model.to(self.device)
        check_runs(model, sample, spec)
        if role == "student" or spec == self.recipe.teacher.model and self.recipe.student.model == "teacher":
            for planned in self.recipe.plan:  # the student's architecture: stage settings that name its modules
                planned.stage.check_model(model, sample)
        return model

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
        if self.dist.is_main:  # remove the previous run's progress: only files edgekd wrote
            self._progress_file.unlink(missing_ok=True)
            if self._checkpoint_dir.exists():
                for old in real_folder(self._checkpoint_dir).iterdir():
                    if CHECKPOINT_NAME.match(old.name) and (old.is_file() or old.is_symlink()):
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

    def _read_progress(self) -> dict[str, Any] | None:
        return read_progress(self.workdir)

    def _resume(self) -> set[tuple[int, int]]:
        progress = self._read_progress()
        if progress is None:
            self.say(f"resume: no finished step in {self.workdir}; starting from the beginning")
            return self._start_fresh()
        finished_stages = 1 + max(index for index, _ in progress["done"])
        if not recipe_continues(self.recipe, progress):
            raise InputError(
                f"resume: the recipe changed since the run in {str(self.workdir)!r} started: its top-level settings "
                f"or its first {finished_stages} stage(s), which have finished steps, hash differently, so its "
                "checkpoints cannot continue it (stages may only be appended). "
                "Run without --resume to start over, or use another workdir."
            )
        checkpoint_path = self._checkpoint_dir / progress["checkpoint"]
        saved = self._load_checkpoint(checkpoint_path)
        self.student = self._initial_student()
        plan = {p.index: p for p in self.recipe.plan}
        try:
            for restore in saved["restores"]:
                plan[restore["stage_index"]].stage.restore(self, restore["state"])
            self.student.load_state_dict(saved["student"])
            records = [StepRecord.from_json(record) for record in json.loads(saved["records"])]
            artefacts = Artefacts.from_json(json.loads(saved["report"]))
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:  # a ValidationError is a ValueError
            raise InputError(
                f"resume: checkpoint {str(checkpoint_path)!r} does not fit this run's student "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): it comes from another run or is damaged. "
                "Run without --resume to start over."
            ) from None
        self.student.to(self.device)
        self._write_recipe()  # only once the checkpoint is known to continue it
        self._restores = list(saved["restores"])
        self.report.steps = records
        self.artefacts = artefacts
        self.report.apply(artefacts)
        done = {tuple(pair) for pair in progress["done"]}
        self.say(f"resume: {len(done)} finished step(s) restored from {checkpoint_path.name}")
        return done  # type: ignore[return-value]

    def _load_checkpoint(self, path: Path) -> dict[str, Any]:
        """A checkpoint of this run (tensors only, no code); InputError naming the file otherwise."""
        saved = load_tensors(path, "resume: checkpoint")
        if not (isinstance(saved, dict) and saved.get("format") == CHECKPOINT_FORMAT and CHECKPOINT_KEYS <= saved.keys()):
            raise InputError(f"resume: {str(path)!r} is not an edgekd checkpoint (format {CHECKPOINT_FORMAT}); run without --resume to start over")
        written_by = saved.get("recipe")  # absent in checkpoints of earlier versions
        if written_by is not None and not _names_a_prefix_of(self.recipe, written_by):
            raise InputError(
                f"resume: checkpoint {str(path)!r} belongs to another run (its recipe hash differs from this run's); "
                "it cannot continue this one. Run without --resume to start over."
            )
        return saved

    def _checkpoint(self, planned: PlannedStage, step: int) -> None:
        if not self.dist.is_main:
            return
        name = f"stage{planned.index:02d}-step{step:03d}.pt"
        payload = {
            "format": CHECKPOINT_FORMAT,
            "recipe": {"stages": planned.index + 1, "hash": self.recipe.fingerprint(planned.index + 1)},
            "student": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
            "restores": self._restores,
            "records": json.dumps([record.to_json() for record in self.report.steps]),
            "report": json.dumps(self.artefacts.to_json()),
        }
        folder = real_folder(self._checkpoint_dir)
        write_atomic(folder / name, serialized(lambda handle: torch.save(payload, handle)))
        previous = self._read_progress() or {"done": []}
        done = previous["done"] + [[planned.index, step]]
        # One hash per stage prefix (the last is the whole recipe's): resume checks the finished prefix.
        stage_hashes = [self.recipe.fingerprint(count) for count in range(1, len(self.recipe.plan) + 1)]
        write_json(self._progress_file, {"stage_hashes": stage_hashes, "checkpoint": name, "done": done})
        stale = previous.get("checkpoint")
        if stale and stale != name:
            (folder / stale).unlink(missing_ok=True)

    # ---- one step ---------------------------------------------------------------
    def _run_step(self, planned: PlannedStage, step: int) -> None:
        stage, steps = planned.stage, planned.stage.num_steps()
        label = f"{planned.key} {step}/{steps}" if steps > 1 else planned.key
        seed = self.phase_seed(planned.index, step)
        started = time.perf_counter()
        torch.manual_seed(seed)
        try:
            # Artefact stages (export, bench) run once, on rank 0: their files and timings are not per rank.
            result = stage.apply(self, step) if stage.compresses or self.dist.is_main else StepResult()
            self.dist.barrier()
            self._restores.append({"stage_index": planned.index, "step": step, "state": result.state})
            measured = self._recover_and_measure(planned, step, label, seed) if stage.compresses else {}
        except TrainingDiverged as exc:
            exc.blame(planned.lr_setting, f"{planned.recover_path}.grad_clip")
            raise
        if stage.compresses:
            record = StepRecord.model_validate({**measured, **result.record, "seconds": round(time.perf_counter() - started, 3)})
            self.report.steps.append(record)
            before = record.accuracy_before_recovery
            self.say(
                f"{label}: {'token accuracy' if self.generates else 'accuracy'} {record.accuracy:.2%}"
                + (f", perplexity {record.perplexity:.3g}" if record.perplexity is not None else "")
                + (f", label exact match {record.label_exact_match:.2%}" if record.label_exact_match is not None else "")
                + (f" (before recovery {before:.2%})" if before is not None else "")
                + f", MACs {record.macs:,}, params {record.params:,}"
                + _versus_teacher(record)
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
        labels = self._token_labels or self._soft_labels
        if labels is not None and (summary := labels.summary())["views"]:
            cache = Artefacts(teacher_cache=TeacherCache.model_validate(summary))  # kept with the checkpoint
            self.artefacts = self.artefacts.merged(cache)
            self.report.apply(cache)
        measured = {**self._evaluate_and_measure(self.student), **self._label_scores(self.student)}
        if trains:
            assert recover is not None
            # Against the best the student had before this phase: a pruning step may leave it at chance, recovery may not.
            reference = max([a for a in (before, *(r.accuracy for r in self.report.steps[-1:])) if a is not None], default=None)
            check_not_collapsed(label, reference, measured["accuracy"], self.data.num_classes, recover.optimizer.lr)
        validation = self.validation_accuracy(self.student)
        teacher_validation = self.report.teacher.val_accuracy
        return {
            "recovery_epochs": recover.epochs if recover else 0,
            "recovery_seconds": round(time.perf_counter() - started, 3),
            "stage": planned.key,
            "stage_index": planned.index,
            "step": step,
            "steps": planned.stage.num_steps(),
            "accuracy_before_recovery": before,
            **measured,
            "val_accuracy": validation,
            "teacher_val_accuracy": teacher_validation,
            "passes_teacher": None if validation is None or teacher_validation is None else validation > teacher_validation,
        }

    def _finish(self) -> None:
        student_spec = self.recipe.student.model
        final = self.report.steps[-1] if self.report.steps else None
        metrics = final.model_dump(include={"accuracy", "perplexity", "macs", "params", "size_bytes"}) if final else self._evaluate_and_measure(self.student)
        model = self.recipe.teacher.model if student_spec == "teacher" else student_spec
        self.report.student = StudentRecord(model=model, pretrained=self._save_pretrained(), **metrics)
        self.report.apply(self.artefacts)
        self.report.complete = True
        gates = self.recipe.gates
        if gates is not None and gates.has_thresholds():
            self.report.gates_config = gates
            self.report.gates = evaluate_gates(self.report, gates)
        self._write_report()
        if self.dist.is_main:
            write_reports(self.workdir, self.report)

    def _save_pretrained(self) -> str | None:
        """A Hugging Face student saved with `save_pretrained` (float weights; a quantized one without its
        quantizers), so `from_pretrained` reloads the pruned model; the folder's name, or None."""
        if not is_hf_model(self.student) or not self.dist.is_main:  # a module-swapped student keeps its class
            return None
        save_pretrained(float_model(self.student), self.workdir / PRETRAINED_DIR)
        return PRETRAINED_DIR

    def _write_report(self) -> None:
        self._write_json(self.workdir / "report.json", self.report.to_json())

    def _write_json(self, path: Path, data: Any) -> None:
        """Strict JSON (non-finite numbers become null, listed in `non_finite`), written atomically by rank 0."""
        if self.dist.is_main:
            write_json(path, data)

    def _write(self, path: Path, save: Callable[[BinaryIO], Any]) -> None:
        """Atomic writes of what `save(handle)` writes, from rank 0 only: the other ranks hold the same state."""
        if self.dist.is_main:
            write_atomic(path, serialized(save))


def check_not_collapsed(description: str, before: float | None, after: float, num_classes: int, lr: float) -> None:
    """A recovery that leaves the student at chance accuracy is a divergence whose loss stayed finite
    (e.g. a too high learning rate pushing every input to one class): stop before it is checkpointed.
    Collapsed: it kept less than a tenth of the margin over chance it had before (`before`)."""
    chance = 1 / num_classes
    if before is None or before - chance < 0.1:
        return
    if after - chance < 0.1 * (before - chance):
        raise TrainingDiverged(
            f"{description}: recovery collapsed the student to chance accuracy ({after:.2%} with {num_classes} classes; "
            f"{before:.2%} before).", lr,
        )


def _versus_teacher(record: StepRecord) -> str:
    """The console's word on the student against the teacher on the validation split."""
    student, teacher = record.val_accuracy, record.teacher_val_accuracy
    if student is None or teacher is None:
        return ""
    verdict = "the student passes the teacher" if student > teacher else "the teacher is still ahead" if teacher > student else "level with the teacher"
    return f"; validation {student:.2%} vs teacher {teacher:.2%}: {verdict}"


def read_progress(workdir: Path) -> dict[str, Any] | None:
    """A run folder's progress.json, checked; None when there is none, InputError naming it when it is damaged."""
    path = workdir / "progress.json"
    if not path.exists():
        return None
    try:
        progress = json.loads(path.read_bytes()) if path.is_file() else None
        problem = _progress_problem(progress)
    except ValueError as exc:  # JSON or Unicode decoding
        problem = f"is not JSON ({exc})"
    if problem:
        raise InputError(
            f"progress file {str(path)!r} {problem}, so the run in {str(workdir)!r} cannot be resumed from it. "
            "Run without --resume to start over, or use another workdir."
        )
    return progress


def recipe_continues(recipe: Recipe, progress: dict[str, Any]) -> bool:
    """Whether `recipe` continues the run `progress` records: the stages with finished steps (and the
    top-level settings) hash as they did. Stages may be appended."""
    finished_stages = 1 + max(index for index, _ in progress["done"])
    return progress["stage_hashes"][finished_stages - 1 : finished_stages] == [recipe.fingerprint(finished_stages)]


def _names_a_prefix_of(recipe: Recipe, written_by: Any) -> bool:
    """Whether a checkpoint's `{stages, hash}` is the hash of `recipe`'s first `stages` stages."""
    stages = written_by.get("stages") if isinstance(written_by, dict) else None
    return isinstance(stages, int) and 1 <= stages <= len(recipe.plan) and written_by.get("hash") == recipe.fingerprint(stages)


def _progress_problem(progress: Any) -> str | None:
    """What is wrong with the content of a progress.json, or None."""
    if not isinstance(progress, dict):
        return f"holds {type(progress).__name__}, not a mapping"
    done, name, hashes = progress.get("done"), progress.get("checkpoint"), progress.get("stage_hashes")
    pairs_ok = isinstance(done, list) and done and all(
        isinstance(p, list) and len(p) == 2 and all(type(v) is int and v >= 0 for v in p) for p in done
    )
    if not pairs_ok:
        return "has no valid 'done' list of [stage, step] pairs"
    if not (isinstance(name, str) and CHECKPOINT_NAME.match(name)):
        return f"names no valid checkpoint (got {name!r})"
    if not (isinstance(hashes, list) and hashes and all(isinstance(h, str) for h in hashes)):
        return "has no valid 'stage_hashes' list"
    return None


def compress(
    recipe: Recipe, *, resume: bool = False, console: Console | None = None, quiet: bool = False, force_unlock: bool = False
) -> Report:
    """Run a validated recipe; returns the report (also in `<workdir>/report.json`)."""
    return Run(recipe, console=console, quiet=quiet, force_unlock=force_unlock).execute(resume=resume)


__all__ = ["Run", "compress", "read_progress", "recipe_continues", "workdir_lock"]
