"""`CheckpointManager`: saves and loads the checkpoints of one directory, keeping the last N and the best K.

Crash safety rests on one ordering: write the new checkpoint (temp file, fsync, `os.replace`, fsync the
directory), then the manifest the same way, then delete pruned files. A kill at any moment therefore leaves a
`manifest.json` whose every entry exists with the recorded size and sha256; what it can leave behind (a temp
file, a checkpoint not yet in the manifest) is removed when the next manager opens the directory.
"""

from __future__ import annotations

import builtins
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from opusclip_track._checks import check_int, is_number
from opusclip_track.config import redact_secrets
from opusclip_track.environment import git_commit

from .background import BackgroundWriter, snapshot
from .errors import CheckpointError, CheckpointNotFoundError
from .loading import FORMAT, FORMAT_VERSION, LoadedCheckpoint, capture_rng, restore
from .manifest import (
    MANIFEST_NAME,
    CheckpointInfo,
    atomic_write,
    check_inside,
    clean_strays,
    read_manifest,
    verify,
    write_manifest,
)


class CheckpointManager:
    """Saves and loads checkpoints in one directory, keeping the last N and the best K.

    Args:
        directory: Folder of the checkpoints and their `manifest.json` (created if missing). One manager
            (one process) writes a directory at a time.
        keep_last: How many of the most recent checkpoints to keep (>= 1).
        keep_best: How many of the best checkpoints by `monitor` to keep besides the recent ones (>= 1).
        monitor: Metric key (e.g. `"val/loss"`) ranking checkpoints; `None` disables `best`. A save whose
            metrics lack the key (or hold NaN) is simply not a candidate for best.
        mode: `"min"` when lower `monitor` is better, `"max"` when higher is.
        async_save: When True, `save` only copies the state to CPU memory and a background thread writes.
        run_name: Recorded in the manifest with each checkpoint.
        on_saved: Called with the final entry once a checkpoint is on disk and in the manifest (from the
            background thread when `async_save`), e.g. to log it as a W&B artifact without waiting.
        on_failed: Called with the entry (size 0, sha256 "") and the error when a background save fails (from the
            background thread; the error is also raised by the next `save`/`wait`/`close`/`load`).
        read_only: Read another process's checkpoints (the other ranks of a torchrun job read what rank 0
            writes): `save` raises, nothing in the directory is created or cleaned up, and the manifest is re-read
            on every look-up, so `latest`, `best` and `load` see the writer's newest saves.
    """

    def __init__(self, directory: str | os.PathLike[str], *, keep_last: int = 3, keep_best: int = 1,
                 monitor: str | None = None, mode: Literal["min", "max"] = "min", async_save: bool = False,
                 run_name: str | None = None, on_saved: Callable[[CheckpointInfo], object] | None = None,
                 on_failed: Callable[[CheckpointInfo, BaseException], object] | None = None,
                 read_only: bool = False) -> None:
        _check_arguments(keep_last, keep_best, monitor, mode)
        self.directory = Path(directory)
        self.keep_last, self.keep_best, self.monitor, self.mode = keep_last, keep_best, monitor, mode
        self.async_save = async_save
        self.run_name, self._on_saved, self._on_failed = run_name, on_saved, on_failed
        self.read_only = read_only
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._git_commit = git_commit()
        self._lock = threading.Lock()  # guards self._entries against the background writer
        self._entries: list[dict[str, Any]] = self._read_manifest()
        self._background = BackgroundWriter()
        if not read_only:  # a reader must not delete the writer's temp file or its checkpoint not yet listed
            clean_strays(self.directory, {e["file"] for e in self._entries})

    # -- saving ------------------------------------------------------------------------------------------

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
             scheduler: Any = None, scaler: Any = None, *, epoch: int, step: int,
             metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> CheckpointInfo:
        """Save a checkpoint of `model` (and optimizer, LR scheduler, AMP grad scaler) at `step`.

        Waits for a pending async save first (saves never overlap) and re-raises its error, if any.

        Returns:
            The manifest entry. With `async_save=True` its size and sha256 are not known yet (0 and "");
            `wait()` and then `latest` give the final entry.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory}: this manager only reads (read_only=True); another process "
                                  "writes these checkpoints")
        self.wait()
        check_int("epoch", epoch, minimum=0)
        check_int("step", step, minimum=0)
        clean_metrics = _clean_metrics(metrics or {})
        states = {"model": model.state_dict(),
                  "optimizer": None if optimizer is None else optimizer.state_dict(),
                  "scheduler": None if scheduler is None else scheduler.state_dict(),
                  "scaler": None if scaler is None else scaler.state_dict()}
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "epoch": epoch, "step": step,
                   "metrics": clean_metrics, "extra": redact_secrets(extra or {}), "rng": capture_rng(), **states}
        # Async: snapshot to CPU now so training may mutate the live tensors while the thread writes.
        payload, ready = snapshot(payload, "checkpoint", copy=self.async_save)
        file = self._new_file_name(step)
        entry = {"file": file, "step": step, "epoch": epoch, "metrics": clean_metrics, "size": 0,
                 "sha256": "", "time": time.time(), "git_commit": self._git_commit, "run_name": self.run_name}
        if not self.async_save:
            return self._info(self._write(payload, entry, None))
        # The entry as it is now (size 0, no sha256), taken before the writer thread fills in its own copy:
        # returning `entry` after start() gave the final size or not, depending on which thread came first.
        returned = self._info(entry)
        written = dict(entry)
        self._background.start(self.directory / file, lambda: self._write(payload, written, ready),
                               lambda error: self._failed(written, error))
        return returned

    def wait(self) -> None:
        """Block until a pending async save is on disk; re-raise its error as `CheckpointSaveError`."""
        self._background.wait()

    def close(self) -> None:
        """Finish pending writes (re-raising a background error)."""
        self.wait()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(self, entry: dict[str, Any], error: BaseException) -> None:
        if self._on_failed is not None:
            self._on_failed(self._info(entry), error)

    def _write(self, payload: dict[str, Any], entry: dict[str, Any],
               ready: torch.cuda.Event | None) -> dict[str, Any]:
        if ready is not None:
            ready.synchronize()  # the non_blocking device-to-host copies have landed
        path = self.directory / entry["file"]
        entry["size"], entry["sha256"] = atomic_write(path, lambda f: torch.save(payload, f))
        with self._lock:
            old = self._entries
            new = self._retain([*old, entry])
        ranked = self._ranked(new)
        write_manifest(self.directory, new, ranked[0] if ranked else None, run_name=self.run_name,
                       monitor=self.monitor, mode=self.mode)
        with self._lock:
            self._entries = new
        kept = {e["file"] for e in new}
        for gone in old:  # only after the manifest no longer lists them
            if gone["file"] not in kept:
                (self.directory / gone["file"]).unlink(missing_ok=True)
        if self._on_saved is not None:
            self._on_saved(self._info(entry))
        return entry

    def _retain(self, entries: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        """The entries to keep, in save order: the last `keep_last` and the `keep_best` best."""
        keep = {e["file"] for e in entries[-self.keep_last:]}
        keep |= {e["file"] for e in self._ranked(entries)[: self.keep_best]}
        return [e for e in entries if e["file"] in keep]

    def _ranked(self, entries: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Best-first candidates by `monitor`; ties go to the earlier save (sort is stable)."""
        if self.monitor is None:
            return []
        scored = [e for e in entries if not math.isnan(e["metrics"].get(self.monitor, math.nan))]
        return sorted(scored, key=lambda e: e["metrics"][self.monitor], reverse=self.mode == "max")

    def _new_file_name(self, step: int) -> str:
        with self._lock:
            taken = {e["file"] for e in self._entries}
        name, version = f"ckpt-step{step:08d}.pt", 0
        while name in taken:  # never overwrite a listed file: the manifest would describe the old bytes
            version += 1
            name = f"ckpt-step{step:08d}-v{version}.pt"
        return name

    # -- manifest ----------------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> builtins.list[CheckpointInfo]:
        """Manifest entries in save order (completed saves only)."""
        self._reread_if_reader()
        with self._lock:
            return [self._info(e) for e in self._entries]

    def list(self) -> builtins.list[CheckpointInfo]:
        """Same as `checkpoints`."""
        return self.checkpoints

    @property
    def latest(self) -> CheckpointInfo | None:
        """The most recently saved checkpoint, or None."""
        entries = self.checkpoints
        return entries[-1] if entries else None

    @property
    def best(self) -> CheckpointInfo | None:
        """The best checkpoint by `monitor` (None without a monitor or a candidate)."""
        self._reread_if_reader()
        with self._lock:
            ranked = self._ranked(self._entries)
        return self._info(ranked[0]) if ranked else None

    def _info(self, entry: dict[str, Any]) -> CheckpointInfo:
        return CheckpointInfo(**entry, path=self.directory / entry["file"])

    def _reread_if_reader(self) -> None:
        if self.read_only:  # the writer replaces the manifest atomically: this reads the old one or the new one
            entries = self._read_manifest()
            with self._lock:
                self._entries = entries

    def _read_manifest(self) -> builtins.list[dict[str, Any]]:
        manifest = read_manifest(self.directory)
        if self.monitor is None and manifest.monitor:  # opened to read: `best` as the writer ranked it
            self.monitor, self.mode = manifest.monitor, manifest.mode
        return manifest.entries

    # -- loading -----------------------------------------------------------------------------------------

    def load(self, which: Literal["latest", "best"] | str | os.PathLike[str] = "latest",
             model: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
             scheduler: Any = None, scaler: Any = None, *, map_location: Any = "cpu",
             restore_rng: bool = True) -> LoadedCheckpoint:
        """Load a checkpoint and restore whatever objects are passed, plus the RNG states.

        Args:
            which: `"latest"`, `"best"`, a file name listed in the manifest, or any path (a file outside the
                manifest is loaded without size/sha256 verification, still with `weights_only=True`).
            model, optimizer, scheduler, scaler: Objects whose `load_state_dict` receives the saved state.
            map_location: Passed to `torch.load`.
            restore_rng: Restore Python `random`, NumPy, torch CPU (and CUDA) generator states.

        Raises:
            CheckpointNotFoundError: No such checkpoint, or its file is gone.
            CheckpointCorruptError: Size or sha256 differs from the manifest, or not a torch checkpoint.
            CheckpointUnsafeError: The file holds pickled code that `weights_only` refuses.
        """
        self.wait()
        self._reread_if_reader()
        path, entry = self._resolve(which)
        if entry is not None:
            verify(path, entry)
        targets = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        return restore(path, targets, map_location=map_location, restore_rng=restore_rng)

    def _resolve(self, which: str | os.PathLike[str]) -> tuple[Path, dict[str, Any] | None]:
        if which in ("latest", "best"):
            info = self.latest if which == "latest" else self.best
            if info is None:
                raise CheckpointNotFoundError(f"which: no {which!r} checkpoint in {self.directory}")
            which = info.path
        path = Path(which)
        path = path if path.is_absolute() or path.parent != Path() else self.directory / path
        with self._lock:
            listed = {e["file"]: e for e in self._entries}
        in_dir = path.parent.resolve() == self.directory.resolve()
        entry = listed.get(path.name) if in_dir else None
        if not path.exists():
            raise CheckpointNotFoundError(f"{path}: checkpoint file does not exist")
        if entry is not None:  # the manifest's file may have become a symlink since the manifest was read
            check_inside(self.directory, path, f"{self.directory / MANIFEST_NAME}: entry {entry['file']!r}")
        return path, entry


def _check_arguments(keep_last: int, keep_best: int, monitor: str | None, mode: str) -> None:
    check_int("keep_last", keep_last, minimum=1)
    check_int("keep_best", keep_best, minimum=1)
    if monitor is not None and (not isinstance(monitor, str) or not monitor):
        raise ValueError(f"monitor: expected a metric name or None, received {monitor!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'min' or 'max', received {mode!r}")


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Metric values as floats (0-d tensors included) so they fit both the manifest and weights_only."""
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(key, str) or not is_number(value):
            raise ValueError(f"metrics[{key!r}]: expected a number or 1-element tensor, received {value!r}")
        clean[key] = float(value)
    return clean


__all__ = ["CheckpointManager"]
