"""Locks in a run's local folder, so that two processes on one machine never work on one run at once.

`flock` locks belong to the open file: the kernel drops them when the process dies, `kill -9`
included, so a crash never leaves a stale lock behind and a resume after it needs nothing cleared.
The lock file holds the holder's pid, host and command for the refusal message.

- `run.lock`: held by the command that trains the run (the `cycle`/`pretrain` launcher) from the
  moment it knows the run id to its end; a second command on the same run is refused at once,
  before it touches the run's status.
- `labels.lock`: held while the run's label store is read, merged and written (`import-labels`,
  the cycle launcher's sync); a second import waits for the first, then merges on top of it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alod import run_folder
from alod.run_folder import RunFolder


# what alod.fileio (`.NAME.XXXX.tmp`) and alod.models.save_checkpoint (`.NAME.tmpPID`) write first
_TEMP = re.compile(r"^\..+\.tmp\d*$")


class RunBusyError(RuntimeError):
    """Another live process holds the run (its pid and command are in the message)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (f"process {info.get('pid', '?')} on {info.get('host', '?')} "
            f"(`{info.get('command', '?')}`, since {info.get('since', '?')})")


@contextmanager
def locked(path: str | os.PathLike, what: str, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive lock on `path` (created if needed); RunBusyError if another process holds
    it for longer than `wait` seconds. `what` says what the lock protects, for the message."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise RunBusyError(f"{what} is in use by {_holder(path)} (lock {path}); "
                                       "wait for it to end, or stop it first") from None
                time.sleep(0.2)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def run_lock(work: str | os.PathLike, run_id: str) -> "contextmanager":
    return locked(RunFolder(work, run_id) / run_folder.RUN_LOCK, f"run {run_id}")


def labels_lock(work: str | os.PathLike, run_id: str, wait: float = 600.0) -> "contextmanager":
    return locked(RunFolder(work, run_id) / run_folder.LABELS_LOCK, f"the label store of run {run_id}", wait=wait)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Leftovers of atomic writes a kill interrupted (`.NAME.*.tmp`, `.NAME.tmpPID`): only call this
    while holding the folder's run lock (and its labels lock), when no write can be in progress."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.rglob(".*"):
        if p.is_file() and _TEMP.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
