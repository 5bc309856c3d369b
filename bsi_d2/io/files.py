"""Atomic file writing: a reader sees the old file or the whole new one, never half of it.

Temp files sit beside their target and carry :data:`TMP_MARK` in their name, so what a killed
run left behind can be found and removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"


def temp_path(path: str | Path) -> Path:
    """A sibling temp name unique to this process."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path to write instead of ``path``: renamed over ``path`` when the block ends
    normally, removed when it raises. For writers that take a path rather than bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_temp_files(folder: str | Path) -> int:
    """Delete temp files a killed run left in ``folder``; returns how many."""
    folder = Path(folder)
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if TMP_MARK in p.name and p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


class OutputDirError(OSError):
    """An output folder that cannot be written; the message names it and says why."""


def check_output_dir(path: str | Path) -> Path:
    """Make ``path`` (and its parents) and prove it writable by writing and removing a probe
    file, so a command fails in one line before hours of work, not with a traceback after."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{path}: the output folder is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temp_path(path / "write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputDirError(f"{path}: cannot write to the output folder: {reason}") from err
    return path
