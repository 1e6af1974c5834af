"""Atomic, durable file writes: a file is either absent or complete, also after a crash or power loss.

A leaf module (standard library only). Every write goes to a temporary name beside the target (same folder,
so same file system), is flushed and fsynced, renamed over the target with `os.replace` (atomic on POSIX and
Windows), and the folder is fsynced so the rename itself survives power loss. On any error the temporary
file is removed and the target is left as it was.

Example:
    >>> with atomic_open("runs/x/config.json") as f:  # doctest: +SKIP
    ...     f.write(b"{}")
    >>> atomic_write_bytes("runs/x/table.json", b"[]")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["TMP_SUFFIX", "atomic_open", "atomic_path", "atomic_write_bytes", "fsync_dir", "temp_name"]

PathLike = str | os.PathLike[str]
# Temporary files are named `.<name>.<pid>.<thread id>.tmp`: hidden, unique per writer, easy to sweep up.
TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The temporary file beside `path` that this process and thread writes before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path for a writer that wants a file name (PyAV, `Image.save`); then commit it.

    The writer must have closed the file when the block ends. The folder of `path` is created if missing.

    Raises:
        OSError: when the write or the rename fails (e.g. `path` is a directory); the temporary file is gone.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file to write `path`'s new content into; committed when the block ends without error.

    An exception inside the block (a failed download, a checksum mismatch) discards what was written.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        yield file  # closed before atomic_path fsyncs and renames it


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and durably; returns `path` as a `Path`."""
    with atomic_open(path) as file:
        file.write(data)
    return Path(path)


def fsync_dir(directory: PathLike) -> None:
    """Make a rename in `directory` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
