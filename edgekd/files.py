"""Writing files so that nothing is lost and nothing is overwritten by surprise.

Every file edgekd writes goes through `write_atomic`: the bytes are made in memory, written
to a temporary file created exclusively beside the target (so a planted link is never
followed), synced, then renamed over the target, and the folder is synced. A reader sees the
old file or the new one, never half of one, and a file that exists survives a crash; a link
at the target is replaced, not written through. A write that fails
(disk full, permission denied) removes its temporary file, leaves the old file as it was,
and raises `WriteFailed` naming the file.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_json(folder / "r.json", {"ratio": float("inf"), "ok": 1.5})
>>> print(" ".join((folder / "r.json").read_text().split()))
{ "ratio": null, "ok": 1.5, "non_finite": { "ratio": "inf" } }
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable

from edgekd.errors import InputError, WriteFailed

# `.report.json.1234.tmp`: the temporary name of `report.json` while process 1234 writes it.
_TEMP_NAME = re.compile(r"^\..+\.\d+\.tmp$")
_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_temporary(path: Path) -> bool:
    return bool(_TEMP_NAME.match(path.name))


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Replace `path` with `data` in one rename; WriteFailed (exit 1, naming the file) if the system refuses."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise InputError(f"{str(path)!r} is a folder; give a file name to write to")
    content = data.encode() if isinstance(data, str) else data
    tmp = temporary_name(path)
    try:
        tmp.unlink(missing_ok=True)  # left by an earlier process that had this pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        raise WriteFailed(f"cannot write {str(path)!r}: {reason}. Nothing was lost: a previous version of the file, if any, is unchanged.") from None
    return path


def _sync_folder(folder: Path) -> None:
    """Make a rename durable; not every platform opens folders for fsync."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def serialized(save: Callable[[BinaryIO], Any]) -> bytes:
    """What `save(handle)` writes (torch.save, np.save, …), made in memory: the disk write, and its
    error, then belong to `write_atomic` (torch reports a full disk as 'basic_ios::clear')."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def finite_json(data: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """`data` with NaN/±inf floats replaced by None, and where they were (`a.b[2]` → 'nan')."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, {path or "(value)": str(data)}
    found: dict[str, str] = {}
    if isinstance(data, dict):
        clean = {}
        for key, value in data.items():
            clean[key], inner = finite_json(value, f"{path}.{key}" if path else str(key))
            found.update(inner)
        return clean, found
    if isinstance(data, (list, tuple)):
        items = []
        for index, value in enumerate(data):
            item, inner = finite_json(value, f"{path}[{index}]")
            items.append(item)
            found.update(inner)
        return items, found
    return data, found


def json_text(data: Any) -> str:
    """Strict JSON (no NaN/Infinity tokens, which strict parsers reject): non-finite numbers become
    null, and a top-level `non_finite` maps each such field's path to the value it had."""
    clean, found = finite_json(data)
    if found and isinstance(clean, dict):
        clean["non_finite"] = {**clean.get("non_finite", {}), **found}
    return json.dumps(clean, indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> Path:
    return write_atomic(path, json_text(data))


def json_object(line: str, where: str) -> dict[str, Any]:
    """One JSON-lines row, which must be an object; `where` names the file and line in the error."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise InputError(f"{where} must be a JSON object with fields, not a {type(row).__name__}")
    return row


def real_folder(path: Path) -> Path:
    """`path` as a real folder (created if missing): a link or a file there is refused, so no writer
    follows a link out of the run folder."""
    if path.is_symlink():
        raise InputError(f"{str(path)!r} is a symbolic link; edgekd writes only into real folders of its run folder. Remove the link.")
    if path.exists() and not path.is_dir():
        raise InputError(f"{str(path)!r} is a file where edgekd keeps a folder; move it away")
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_file(path: Path, option: str) -> Path:
    """Check a file the user asked for (--json, --junit, --output) before any work is done: exit 2
    for a folder or a parent that is a file, rather than losing the results at the end."""
    if path.is_dir():
        raise InputError(f"{option} {str(path)!r} is a folder; give a file name, e.g. {str(path / 'out')!r}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a folder")
    return path


def sweep_temporaries(*folders: Path) -> list[Path]:
    """Remove temporary files left in `folders` by interrupted writes (call while holding the run's lock)."""
    removed = []
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            if is_temporary(entry) and (entry.is_symlink() or entry.is_file()):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed
