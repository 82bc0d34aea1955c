"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


class DiskFullError(RuntimeError):
    """A write ran out of space; the message names the file and the filesystem's free space."""


def disk_full(error: BaseException, path: str | os.PathLike) -> DiskFullError | None:
    """The DiskFullError to raise for `error` (met while writing `path`), or None if the disk is not
    why. torch.save reports a failed write as a RuntimeError, so the free space decides too."""
    path = Path(path)
    try:
        usage = shutil.disk_usage(path.parent)
    except OSError:
        usage = None
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and usage is not None and isinstance(error, (OSError, RuntimeError)):
        full = usage.free < 1 << 20  # under 1 MiB left: the write failed for want of space
    if not full:
        return None
    where = (f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB" if usage else "no space")
    return DiskFullError(f"no space left on device writing {path} ({where} on the filesystem of {path.parent}); "
                         f"the previous {path.name}, if any, is intact. Free space there (or point work_dir "
                         f"elsewhere), then resume the run")


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        full = disk_full(e, path) if isinstance(e, Exception) else None
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from e
        raise
    return path


def write_json_atomic(obj: Any, path: str | os.PathLike, *, indent: int | None = None) -> Path:
    # dumps + one write: json.dump streams through the slow pure-Python encoder.
    separators = None if indent is not None else (",", ":")
    return write_text_atomic(json.dumps(obj, indent=indent, separators=separators, allow_nan=False), path)
