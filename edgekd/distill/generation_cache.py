"""The teacher's generations, cached on disk and resumable.

Generation is the expensive part of step-by-step distillation (a large model writes a rationale for
every training input), so it is done once per (teacher weights, prompting, data) and kept:

    <cache root>/<key>/key.json                 what the key is made of, and a digest of the prompts
    <cache root>/<key>/items-0000000-0000007.jsonl   one flushed batch: {"index": i, "output": "…"} per line

The folder name is a digest of the teacher's weights, of everything in the prompting that changes what
the teacher writes (template, shots, generation settings; not the parse pattern, so re-parsing is
free), and of the inputs. Each batch is written to a temporary file, fsynced and renamed, so a killed
run leaves whole batches only; the next run reads them, generates only the missing items, and never
reruns a finished one. Items are batched on a fixed grid (item i is in batch i // batch_size), so a
resumed run sees the same batches as an uninterrupted one and writes the same text (greedy, or sampled
with a seed per batch as `hf_generate_fn` does).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
import torch
from torch import nn

from edgekd.data.rationales import RationaleExample, atomic_write_text, write_jsonl
from edgekd.distill.prompting import Generate, TeacherPrompting, read_teacher_outputs
from edgekd.errors import InputError

CACHE_FORMAT = "edgekd.generations/1"
_SHARD = re.compile(r"items-\d{7}-\d{7}\.jsonl")
_PARTIAL = re.compile(r"\.items-\d{7}-\d{7}\.jsonl\.(\d+)\.tmp")


def module_digest(model: nn.Module) -> str:
    """sha256 of a model's state: names, dtypes, shapes and bytes of every parameter and buffer."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def text_digest(texts: Sequence[str]) -> str:
    """sha256 of a list of texts, order included."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # elsewhere signal 0 is not a probe; keep the file, it is only litter
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def _remove_abandoned(folder: Path) -> None:
    """A batch file half-written by a process that died is garbage; one a live process writes is not."""
    for path in folder.iterdir():
        match = _PARTIAL.fullmatch(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)


def _read_shards(folder: Path, count: int) -> dict[int, str]:
    done: dict[int, str] = {}
    for path in sorted(p for p in folder.iterdir() if _SHARD.fullmatch(p.name)):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
                index, output = row["index"], row["output"]
                if not (isinstance(index, int) and 0 <= index < count and isinstance(output, str)):
                    raise ValueError(f"index {index!r} out of range 0..{count - 1} or output not text")
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(
                    f"generation cache file {str(path)!r} line {number} is damaged ({exc}); delete that file "
                    "and its items are generated again"
                ) from None
            done.setdefault(index, output)
    return done


def _grid_batches(missing: list[int], batch_size: int) -> list[list[int]]:
    batches: dict[int, list[int]] = {}
    for index in missing:
        batches.setdefault(index // batch_size, []).append(index)
    return [batches[b] for b in sorted(batches)]


def _progress_columns() -> tuple[Any, ...]:
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())


def _claim(folder: Path, prompts: Sequence[str], key: Mapping[str, Any]) -> None:
    """Record which prompts the folder's items answer (with the key, for people); refuse other prompts."""
    record = {**key, "prompts": text_digest(prompts), "count": len(prompts)}
    path = folder / "key.json"
    if not path.is_file():
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        return
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"generation cache file {str(path)!r} is damaged ({exc}); delete its folder to generate again") from None
    if stored.get("prompts") != record["prompts"]:
        raise InputError(
            f"generation cache folder {str(folder)!r} holds outputs for {stored.get('count')} other prompts; "
            "give each set of prompts its own folder"
        )


def cached_generate(
    generate: Generate, prompts: Sequence[str], folder: str | Path, *, batch_size: int = 8,
    progress: Progress | None = None, description: str = "teacher generations", key: Mapping[str, Any] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Outputs for every prompt, reading finished batches from `folder` and generating only the rest.

    Returns the outputs in prompt order and {"generated": …, "reused": …}. `progress` is a rich Progress
    to add a bar to; without one the function shows its own. `key` is stored in key.json beside the
    digest of the prompts, which later calls must match."""
    if batch_size < 1:
        raise InputError(f"generation.batch_size must be at least 1, not {batch_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _claim(folder, prompts, key or {"format": CACHE_FORMAT})
    _remove_abandoned(folder)
    done = _read_shards(folder, len(prompts))
    reused = len(done)
    batches = _grid_batches([i for i in range(len(prompts)) if i not in done], batch_size)
    own = progress is None
    bar = progress or Progress(*_progress_columns())
    if own:
        bar.start()
    try:
        task = bar.add_task(description, total=len(prompts), completed=reused, unit="inputs")
        for batch in batches:
            outputs = generate([prompts[i] for i in batch])
            if not (isinstance(outputs, list) and len(outputs) == len(batch) and all(isinstance(o, str) for o in outputs)):
                got = f"{len(outputs)} outputs" if isinstance(outputs, list) else f"a {type(outputs).__name__}"
                raise InputError(
                    f"the teacher's generate returned {got} for {len(batch)} prompts; it must return a list with one string per prompt"
                )
            rows = [{"index": i, "output": o} for i, o in zip(batch, outputs)]
            write_jsonl(folder / f"items-{batch[0]:07d}-{batch[-1]:07d}.jsonl", rows)
            done.update(zip(batch, outputs))
            bar.advance(task, len(batch))
    finally:
        if own:
            bar.stop()
    return [done[i] for i in range(len(prompts))], {"generated": len(prompts) - reused, "reused": reused}


def teacher_rationales(
    generate: Generate, examples: Sequence[RationaleExample], prompting: TeacherPrompting, cache_root: str | Path,
    teacher_digest: str, *, batch_size: int = 8, progress: Progress | None = None,
) -> tuple[list[RationaleExample], dict[str, Any]]:
    """Have the teacher write a rationale and a label for every example (cached under `cache_root`), then
    parse them. Returns the examples that parsed (each with its rationale and teacher label; disagreeing
    ones only if `prompting.keep_disagreeing`) and a summary: generated, reused, unparsed, disagreeing,
    dropped, kept, the cache folder and a few outputs that did not parse."""
    inputs = [e.input for e in examples]
    key = {"format": CACHE_FORMAT, "teacher": teacher_digest, "prompting": prompting.generation_key(), "data": text_digest(inputs)}
    folder = Path(cache_root) / key_digest(key)[:16]
    outputs, counts = cached_generate(
        generate, [prompting.prompt(x) for x in inputs], folder, batch_size=batch_size, progress=progress, key=key
    )
    kept, stats = read_teacher_outputs(examples, outputs, prompting)
    summary = {
        **counts, "unparsed": stats.unparsed, "disagreeing": stats.disagreeing, "dropped": stats.dropped,
        "kept": stats.kept, "cache": str(folder), "unparsed_examples": stats.unparsed_examples,
    }
    return kept, summary
