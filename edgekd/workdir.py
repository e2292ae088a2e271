"""Run folders: edgekd writes only into folders it owns, and one run at a time.

Ownership. A fresh run writes into a folder that is new, empty, or marked as an edgekd
run folder by the file `.edgekd-run`, which the first run writes. Any other folder is
refused (exit 2), so a run never overwrites or deletes a file it did not write.

The lock. `<workdir>/.lock` holds `pid@host`, written before the file appears (a
hard link of a finished temporary file), and its holder keeps an flock on it for its
whole life, so the kernel says whether a holder on this host is still alive. A lock
whose holder died is taken over by the one process that wins the flock on it; a lock
from another host cannot be checked from here and is refused unless `force` (the CLI's
`--force-unlock`); an empty lock (written by an older edgekd) is held while it is
younger than `EMPTY_LOCK_GRACE_S`."""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import socket
import stat
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from edgekd.errors import InputError
from edgekd.files import is_temporary, write_atomic

MARKER = ".edgekd-run"
LOCK = ".lock"
EMPTY_LOCK_GRACE_S = 5.0
_LOCK_CANDIDATE = ".lock-candidate-"
_RETRY_S, _RETRY_FOR_S = 0.01, 5.0
_candidates = itertools.count()


def is_run_folder(workdir: Path) -> bool:
    return (workdir / MARKER).is_file()


def claim_workdir(workdir: Path, *, adopt: bool = False) -> None:
    """Make `workdir` a folder this run may write into, or refuse it (InputError naming it).

    `adopt` accepts an unmarked folder that holds a run of an earlier edgekd (resume checks that)."""
    if workdir.exists() and not workdir.is_dir():
        raise InputError(f"workdir {str(workdir)!r} is a file, not a folder; choose a folder (--workdir DIR or --set workdir=DIR)")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"workdir {str(workdir)!r} cannot be created: a part of its path is a file") from None
    if is_run_folder(workdir):
        return
    foreign = sorted(e.name for e in workdir.iterdir() if not _edgekd_bookkeeping(e.name))
    if foreign and not adopt:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"workdir {str(workdir)!r} is not empty ({shown}) and is not an edgekd run folder (it has no {MARKER} file). "
            "edgekd writes only into a new or empty folder or one of its own run folders, so it never overwrites or deletes "
            "files it did not write: choose another folder (--workdir DIR or --set workdir=DIR). (A run folder of an "
            "earlier edgekd has no marker yet: continue it with --resume, which adopts it, or delete it.)"
        )
    stamp = {"edgekd": "run folder", "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_atomic(workdir / MARKER, json.dumps(stamp) + "\n")


def _edgekd_bookkeeping(name: str) -> bool:
    """Files that say nothing about who owns a folder: another run's lock and temporaries."""
    return name == LOCK or name.startswith(_LOCK_CANDIDATE) or is_temporary(Path(name))


@contextmanager
def workdir_lock(workdir: Path, *, force: bool = False) -> Iterator[None]:
    """Hold `<workdir>/.lock` for the block; InputError (exit 2) if another live run holds it."""
    lock = workdir / LOCK
    fd = _acquire(lock, force)
    try:
        yield
    finally:
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:  # still ours: only then remove it
                lock.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)


def _acquire(lock: Path, force: bool) -> int:
    identity = f"{os.getpid()}@{socket.gethostname()}"
    deadline = time.monotonic() + _RETRY_FOR_S
    while time.monotonic() < deadline:
        fd = _publish(lock, identity)
        if fd is not None:
            return fd
        if not _remove_if_stale(lock, force):
            time.sleep(_RETRY_S)  # the lock changes hands right now: look again
    raise InputError(f"lock file {str(lock)!r} kept changing hands for {_RETRY_FOR_S:.0f} s; another edgekd run is starting in this workdir")


def _publish(lock: Path, identity: str) -> int | None:
    """Create the lock with its content already in place, flocked from its first moment; None if one exists."""
    candidate = lock.with_name(f"{_LOCK_CANDIDATE}{os.getpid()}-{next(_candidates)}")
    fd = os.open(candidate, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    published = False
    try:
        os.write(fd, identity.encode())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            os.link(candidate, lock)
        except FileExistsError:
            return None
        except OSError as exc:  # a file system without hard links: exclusive create, content right after
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            return _publish_without_link(lock, identity)
        published = True
        return fd
    finally:
        if not published:
            os.close(fd)
        candidate.unlink(missing_ok=True)


def _publish_without_link(lock: Path, identity: str) -> int | None:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a competitor judged it in the instant before: it will refuse, and so do we
        os.close(fd)
        return None
    os.write(fd, identity.encode())
    return fd


def _remove_if_stale(lock: Path, force: bool) -> bool:
    """Remove a lock whose holder is gone and return True; return False to look again; raise if it is held."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False  # released meanwhile
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise InputError(f"lock file {str(lock)!r} is a folder, not a lock; remove it if no edgekd run uses this workdir")
        owner = os.read(fd, 4096).decode(errors="replace").strip()
        pid_text, _, host = owner.partition("@")
        pid = int(pid_text) if pid_text.isdigit() else None
        here = host == socket.gethostname()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live process on this host holds it
            if here and pid is not None and not _process_alive(pid):
                return False  # its holder died and another process is taking it over
            if not owner:
                return False  # an older edgekd between creating and writing it
            raise _held(lock, pid_text, host) from None
        # Nobody on this host holds the flock.
        if not owner:
            if time.time() - os.fstat(fd).st_mtime < EMPTY_LOCK_GRACE_S:
                raise _held(lock, "unknown: its lock file was created a moment ago", "")
        elif not here:
            if not force:
                raise InputError(
                    f"workdir lock {str(lock)!r} is held by pid {pid_text} on host {host!r}; edgekd cannot check a process "
                    "on another host (a shared file system). If no edgekd run is active there, run again with --force-unlock."
                )
        elif pid is None or _process_alive(pid):
            raise _held(lock, pid_text, host)
        # Stale, and this process holds its flock: no one else removes it meanwhile.
        try:
            if os.stat(lock).st_ino != os.fstat(fd).st_ino:
                return False
            lock.unlink()
        except FileNotFoundError:
            pass
        return True
    finally:
        os.close(fd)


def _held(lock: Path, pid: str, host: str) -> InputError:
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return InputError(
        f"workdir {str(lock.parent)!r} is in use by another edgekd run (pid {pid}{where}; lock file {str(lock)!r}). "
        "Wait for it to finish or choose another workdir (--set workdir=…)."
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
