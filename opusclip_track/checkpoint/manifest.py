"""The manifest (`manifest.json`) and the verification of the files it lists.

The manifest is the directory's source of truth: a checkpoint exists once the manifest lists it, with the size
and sha256 of its bytes. Both the checkpoint files and the manifest are written atomically and durably
(`_files.atomic_open`: temp file, fsync, `os.replace`, fsync of the directory), hashing the bytes as they are
written. Every entry read back must name a checkpoint file of this directory: the manager deletes and loads the
files its manifest names, so `"file": "../../victim.txt"` would otherwise delete a file anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

from opusclip_track._checks import is_number
from opusclip_track._files import atomic_open

from .errors import CheckpointCorruptError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
CKPT_NAME = re.compile(r"^ckpt-step\d{8,}(-v\d+)?\.pt$")
# `_files.temp_name`: `.<name>.<pid>.<thread>.tmp` (and `.<name>.<pid>.tmp`, written by earlier versions).
TMP_NAME = re.compile(r"^\.(ckpt-step\d{8,}(-v\d+)?\.pt|manifest\.json)\.\d+(\.\d+)?\.tmp$")
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "file": (str,), "step": (int,), "epoch": (int,), "metrics": (dict,), "size": (int,), "sha256": (str,),
    "time": (int, float), "git_commit": (str, type(None)), "run_name": (str, type(None))}


@dataclass(frozen=True)
class CheckpointInfo:
    """One manifest entry: a checkpoint file and what was recorded about it when it was saved."""

    file: str
    step: int
    epoch: int
    metrics: dict[str, float]
    size: int
    sha256: str
    time: float
    git_commit: str | None
    run_name: str | None
    path: Path = field(compare=False)


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` holds besides derived fields (`latest`, `best`): the entries in save order and how the
    writer ranked them."""

    entries: list[dict[str, Any]]
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"


def read_manifest(directory: Path) -> Manifest:
    """The manifest of `directory` (empty when there is none), every entry checked.

    Raises:
        CheckpointCorruptError: Not a manifest, or an entry that does not describe a checkpoint file of
            `directory`.
    """
    path = directory / MANIFEST_NAME
    if not path.exists():
        return Manifest([])
    try:
        manifest = json.loads(path.read_text())
        entries = list(manifest["checkpoints"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointCorruptError(f"{path}: not a checkpoint manifest ({error})") from error
    for index, entry in enumerate(entries):
        _check_entry(directory, path, index, entry)
    mode: Literal["min", "max"] = "max" if manifest.get("mode") == "max" else "min"  # ranked as "min" otherwise
    return Manifest(entries, manifest.get("monitor") or None, mode)


def write_manifest(directory: Path, entries: list[dict[str, Any]], best: dict[str, Any] | None, *,
                   run_name: str | None, monitor: str | None, mode: str) -> None:
    """Replace `directory`'s manifest atomically: a reader sees the old one or the new one, never a mix."""
    manifest = {"version": MANIFEST_VERSION, "run_name": run_name, "monitor": monitor, "mode": mode,
                "latest": entries[-1]["file"] if entries else None, "best": None if best is None else best["file"],
                "checkpoints": entries}
    atomic_write(directory / MANIFEST_NAME, lambda f: f.write(json.dumps(manifest, indent=2).encode()))


def clean_strays(directory: Path, listed: set[str]) -> None:
    """Remove temp files of an interrupted write and checkpoints the manifest never listed."""
    has_manifest = (directory / MANIFEST_NAME).exists()
    for path in directory.iterdir():
        orphan = has_manifest and CKPT_NAME.match(path.name) and path.name not in listed
        if TMP_NAME.match(path.name) or orphan:
            path.unlink(missing_ok=True)


def check_inside(directory: Path, path: Path, where: str) -> None:
    """`path` (when it exists) must resolve inside `directory`: a symlink out of it is refused."""
    if path.is_symlink() and path.resolve().parent != directory.resolve():
        raise CheckpointCorruptError(f"{where}: expected a file inside {directory}, received a symlink to "
                                     f"{path.resolve()}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> tuple[int, str]:
    """Write via `write(file)` atomically and durably (`_files.atomic_open`); the size and sha256 written."""
    with atomic_open(path) as file:
        writer = _HashingWriter(file)
        write(cast(IO[bytes], writer))  # torch.save only needs write() and flush()
    return writer.size, writer.sha256.hexdigest()


def verify(path: Path, entry: dict[str, Any]) -> None:
    """The file at `path` has the size and sha256 its manifest entry recorded.

    Raises:
        CheckpointCorruptError: It does not (truncated, or changed since it was written).
    """
    size = path.stat().st_size
    if size != entry["size"]:
        raise CheckpointCorruptError(f"{path}: size {size} != manifest {entry['size']} (truncated?)")
    if _sha256_file(path) != entry["sha256"]:
        raise CheckpointCorruptError(f"{path}: sha256 mismatch with the manifest (file is corrupt)")


def _check_entry(directory: Path, manifest: Path, index: int, entry: Any) -> None:
    """A manifest entry must describe a checkpoint file of this directory, with the recorded field types."""
    where = f"{manifest}: entry {index}"
    if not isinstance(entry, dict) or set(entry) != set(_ENTRY_TYPES):
        raise CheckpointCorruptError(f"{where}: expected a dict with keys {sorted(_ENTRY_TYPES)}, received {entry!r}")
    for key, types in _ENTRY_TYPES.items():
        if not isinstance(entry[key], types) or isinstance(entry[key], bool):
            raise CheckpointCorruptError(f"{where} ({entry['file']!r}): {key}: expected "
                                         f"{' or '.join(t.__name__ for t in types)}, received {entry[key]!r}")
    if not all(isinstance(k, str) and is_number(v) for k, v in entry["metrics"].items()):
        raise CheckpointCorruptError(f"{where} ({entry['file']!r}): metrics: expected names -> numbers, "
                                     f"received {entry['metrics']!r}")
    if not CKPT_NAME.match(entry["file"]):
        raise CheckpointCorruptError(f"{where}: file: expected a checkpoint file name of this directory "
                                     f"(ckpt-stepNNNNNNNN.pt, no path), received {entry['file']!r}")
    check_inside(directory, directory / entry["file"], f"{where} ({entry['file']!r})")


class _HashingWriter:
    """File wrapper that hashes and counts bytes as they are written, sparing a second read of the file."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["CKPT_NAME", "MANIFEST_NAME", "TMP_NAME", "CheckpointInfo", "Manifest", "atomic_write", "check_inside",
           "clean_strays", "read_manifest", "verify", "write_manifest"]
