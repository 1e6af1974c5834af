"""`CheckpointManager`: atomic, versioned checkpoints with top-k/best retention, safe loading and async save.

Crash safety rests on one ordering: write the new checkpoint (temp file, fsync, `os.replace`, fsync the
directory), then the manifest the same way, then delete pruned files. A kill at any moment therefore leaves a
`manifest.json` whose every entry exists with the recorded size and sha256; what it can leave behind (a temp
file, a checkpoint not yet in the manifest) is removed when the next manager opens the directory.

Loading never executes pickled code: files are read with `torch.load(weights_only=True)`, so everything saved
(state dicts, RNG states, `extra`) is kept to tensors, numbers, strings, lists, tuples and dicts.

Example:
    >>> manager = CheckpointManager("checkpoints/run1", keep_last=3, monitor="val/loss", mode="min")
    >>> manager.save(model, optimizer, scheduler, epoch=3, step=1200, metrics={"val/loss": 0.41})
    >>> resumed = manager.load("latest", model, optimizer, scheduler)  # model/optimizer/RNG restored
    >>> start_step = resumed.step + 1
"""

from __future__ import annotations

import builtins
import collections
import hashlib
import json
import math
import os
import pickle
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np
import torch

from opusclip_track._checks import check_int, is_number
from opusclip_track._files import atomic_open
from opusclip_track.config import redact_secrets
from opusclip_track.distributed import RankZeroChannel, next_index

MANIFEST_NAME = "manifest.json"
_FORMAT = "opusclip-track-checkpoint"
_FORMAT_VERSION = 1
_CKPT_NAME = re.compile(r"^ckpt-step\d{8,}(-v\d+)?\.pt$")
# `_files.temp_name`: `.<name>.<pid>.<thread>.tmp` (and `.<name>.<pid>.tmp`, written by earlier versions).
_TMP_NAME = re.compile(r"^\.(ckpt-step\d{8,}(-v\d+)?\.pt|manifest\.json)\.\d+(\.\d+)?\.tmp$")
# Values `torch.load(weights_only=True)` reads back without any allow-listing.
_PLAIN_TYPES = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


class CheckpointError(RuntimeError):
    """Base class of every checkpoint failure; the message names the file and what failed."""


class CheckpointNotFoundError(CheckpointError):
    """The requested checkpoint (or the file the manifest lists for it) does not exist."""


class CheckpointCorruptError(CheckpointError):
    """The file's size or sha256 differs from the manifest, or it is not a readable torch file."""


class CheckpointUnsafeError(CheckpointError):
    """The file holds pickled objects that `weights_only` loading refuses (they could run code)."""


class CheckpointSaveError(CheckpointError):
    """A background (async) save failed; raised on the next `save`/`wait`/`close`/`load`."""


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
class LoadedCheckpoint:
    """What `CheckpointManager.load` read: counters, metrics, `extra`, and the raw state dicts."""

    epoch: int
    step: int
    metrics: dict[str, float]
    extra: dict[str, Any]
    path: Path
    state_dicts: dict[str, Any] = field(repr=False, default_factory=dict)


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
        self._git_commit = _git_commit()
        self._lock = threading.Lock()  # guards self._entries against the background writer
        self._entries: list[dict[str, Any]] = self._read_manifest()
        self._pending: threading.Thread | None = None
        self._error: tuple[str, BaseException] | None = None
        if not read_only:  # a reader must not delete the writer's temp file or its checkpoint not yet listed
            self._clean_strays()

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
        payload = {"format": _FORMAT, "version": _FORMAT_VERSION, "epoch": epoch, "step": step,
                   "metrics": clean_metrics, "extra": redact_secrets(extra or {}), "rng": _capture_rng(),
                   **states}
        # Async: snapshot to CPU now so training may mutate the live tensors while the thread writes.
        payload, ready = _snapshot(payload, "checkpoint", copy=self.async_save)
        file = self._new_file_name(step)
        entry = {"file": file, "step": step, "epoch": epoch, "metrics": clean_metrics, "size": 0,
                 "sha256": "", "time": time.time(), "git_commit": self._git_commit, "run_name": self.run_name}
        if not self.async_save:
            return self._info(self._write(payload, entry, None))
        self._pending = threading.Thread(target=self._write_in_background, args=(payload, entry, ready),
                                         name=f"checkpoint-{file}")
        self._pending.start()  # not a daemon: interpreter exit waits for the write to finish
        return self._info(entry)

    def wait(self) -> None:
        """Block until a pending async save is on disk; re-raise its error as `CheckpointSaveError`."""
        if self._pending is not None:
            self._pending.join()
            self._pending = None
        if self._error is not None:
            file, error = self._error
            self._error = None
            message = f"background save of {self.directory / file} failed: {error!r}"
            raise CheckpointSaveError(message) from error

    def close(self) -> None:
        """Finish pending writes (re-raising a background error)."""
        self.wait()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_in_background(self, payload: dict[str, Any], entry: dict[str, Any],
                             ready: torch.cuda.Event | None) -> None:
        try:
            self._write(payload, entry, ready)
        except BaseException as error:  # handed to the caller's thread by wait()
            self._error = (entry["file"], error)
            if self._on_failed is not None:
                self._on_failed(self._info(entry), error)

    def _write(self, payload: dict[str, Any], entry: dict[str, Any],
               ready: torch.cuda.Event | None) -> dict[str, Any]:
        if ready is not None:
            ready.synchronize()  # the non_blocking device-to-host copies have landed
        path = self.directory / entry["file"]
        entry["size"], entry["sha256"] = _atomic_write(path, lambda f: torch.save(payload, f))
        with self._lock:
            old = self._entries
            new = self._retain([*old, entry])
        self._write_manifest(new)
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
        path = self.directory / MANIFEST_NAME
        if not path.exists():
            return []
        try:
            manifest = json.loads(path.read_text())
            entries = list(manifest["checkpoints"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointCorruptError(f"{path}: not a checkpoint manifest ({error})") from error
        for index, entry in enumerate(entries):
            _check_entry(self.directory, path, index, entry)
        if self.monitor is None and manifest.get("monitor"):  # opened to read: `best` as the writer ranked it
            self.monitor, self.mode = manifest["monitor"], manifest.get("mode", "min")
        return entries

    def _write_manifest(self, entries: builtins.list[dict[str, Any]]) -> None:
        ranked = self._ranked(entries)
        manifest = {"version": _FORMAT_VERSION, "run_name": self.run_name, "monitor": self.monitor,
                    "mode": self.mode, "latest": entries[-1]["file"] if entries else None,
                    "best": ranked[0]["file"] if ranked else None, "checkpoints": entries}
        _atomic_write_bytes(self.directory / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())

    def _clean_strays(self) -> None:
        """Remove temp files of an interrupted write and checkpoints the manifest never listed."""
        listed = {e["file"] for e in self._entries}
        has_manifest = (self.directory / MANIFEST_NAME).exists()
        for path in self.directory.iterdir():
            orphan = has_manifest and _CKPT_NAME.match(path.name) and path.name not in listed
            if _TMP_NAME.match(path.name) or orphan:
                path.unlink(missing_ok=True)

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
            _verify(path, entry)
        payload = _torch_load(path, map_location)
        targets = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        for key, target in targets.items():
            if target is None:
                continue
            if payload.get(key) is None:
                raise CheckpointError(f"{path}: {key} was given but the checkpoint holds no {key} state")
            target.load_state_dict(payload[key])
        if restore_rng:
            _restore_rng(payload["rng"])
        return LoadedCheckpoint(epoch=payload["epoch"], step=payload["step"], metrics=payload["metrics"],
                                extra=payload["extra"], path=path,
                                state_dicts={k: payload.get(k) for k in targets})

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
            _check_inside(self.directory, path, f"{self.directory / MANIFEST_NAME}: entry {entry['file']!r}")
        return path, entry


class CheckpointBarrier:
    """What `save` on every rank of a multi-process job needs: rank 0 writes, the other ranks wait until it is done.

    Rank 0 publishes each save's manifest entry (`saved`), and publishes it again when its file is on disk and in
    the manifest (`written`, from the background thread with `async_save`) or its error when the write failed; the
    other ranks wait for these through the job's store (`distributed.RankZeroChannel`: rank 0 never waits for
    them). Saves are numbered per run and per process, so every rank must save as often as rank 0.

    Args:
        run_name: the run whose checkpoints these are.
    """

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name
        opened = next_index(f"checkpoints/{run_name}")  # a run reopened in the same job: its own keys
        self._channel = RankZeroChannel(f"checkpoint/{run_name}/{opened}")
        self._next = 0
        self._last: dict[str, Any] | None = None  # other ranks: the entry of the last save rank 0 published

    def next_save(self) -> int:
        """The number of the save being made (every rank counts its calls)."""
        self._next += 1
        return self._next - 1

    # -- rank 0 ------------------------------------------------------------------------------------------
    def saved(self, index: int, info: CheckpointInfo | None, error: BaseException | None = None) -> None:
        """Rank 0, when `save` returned `info` (or raised `error`): the other ranks' `save` returns."""
        self._channel.publish(f"saved/{index}", json.dumps(
            {"error": repr(error)} if info is None else {"entry": _entry_of(info)}))

    def written(self, info: CheckpointInfo) -> None:
        """Rank 0's `on_saved`: the file is on disk and in the manifest."""
        self._channel.publish(_written_key(info.file, info.time), json.dumps({"entry": _entry_of(info)}))

    def failed(self, info: CheckpointInfo, error: BaseException) -> None:
        """Rank 0's `on_failed`: the background write of `info` failed."""
        self._channel.publish(_written_key(info.file, info.time), json.dumps({"error": repr(error)}))

    # -- the other ranks ---------------------------------------------------------------------------------
    def wait_saved(self, index: int, directory: Path) -> CheckpointInfo | None:
        """Wait until rank 0's save number `index` returned there, and return rank 0's entry (None when there is
        no store to wait through: a launcher other than torchrun without `init_process_group`)."""
        value = self._channel.receive(f"saved/{index}", f"checkpoint {index} of run {self.run_name!r}")
        if value is None:
            return None
        entry = self._entry(value, f"saving checkpoint {index}")
        self._last = entry
        return CheckpointInfo(**entry, path=directory / entry["file"])

    def wait_written(self) -> None:
        """Wait until the last checkpoint rank 0 saved is on disk (at once unless it was saved asynchronously)."""
        if self._last is None:
            return
        file, at = self._last["file"], self._last["time"]
        value = self._channel.receive(_written_key(file, at), f"that checkpoint {file} of run {self.run_name!r} "
                                      "is written")
        if value is not None:
            self._entry(value, f"writing {file}")

    def _entry(self, value: str, what: str) -> dict[str, Any]:
        data = json.loads(value)
        if "error" in data:
            raise CheckpointSaveError(f"run {self.run_name!r}: rank 0 failed {what}: {data['error']}")
        return cast(dict[str, Any], data["entry"])


def _entry_of(info: CheckpointInfo) -> dict[str, Any]:
    return {k: v for k, v in asdict(info).items() if k != "path"}


def _written_key(file: str, at: float) -> str:
    return f"written/{file}@{at!r}"  # a file name is reused once its checkpoint was pruned: the time is not


# -- private helpers --------------------------------------------------------------------------------------


def _check_arguments(keep_last: int, keep_best: int, monitor: str | None, mode: str) -> None:
    check_int("keep_last", keep_last, minimum=1)
    check_int("keep_best", keep_best, minimum=1)
    if monitor is not None and (not isinstance(monitor, str) or not monitor):
        raise ValueError(f"monitor: expected a metric name or None, received {monitor!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'min' or 'max', received {mode!r}")


_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "file": (str,), "step": (int,), "epoch": (int,), "metrics": (dict,), "size": (int,), "sha256": (str,),
    "time": (int, float), "git_commit": (str, type(None)), "run_name": (str, type(None))}


def _check_entry(directory: Path, manifest: Path, index: int, entry: Any) -> None:
    """A manifest entry must describe a checkpoint file of this directory: the manager deletes and loads the
    files its manifest names, so `"file": "../../victim.txt"` would delete a file anywhere."""
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
    if not _CKPT_NAME.match(entry["file"]):
        raise CheckpointCorruptError(f"{where}: file: expected a checkpoint file name of this directory "
                                     f"(ckpt-stepNNNNNNNN.pt, no path), received {entry['file']!r}")
    _check_inside(directory, directory / entry["file"], f"{where} ({entry['file']!r})")


def _check_inside(directory: Path, path: Path, where: str) -> None:
    """`path` (when it exists) must resolve inside `directory`: a symlink out of it is refused."""
    if path.is_symlink() and path.resolve().parent != directory.resolve():
        raise CheckpointCorruptError(f"{where}: expected a file inside {directory}, received a symlink to "
                                     f"{path.resolve()}")


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


def _snapshot(obj: Any, where: str, copy: bool) -> tuple[Any, torch.cuda.Event | None]:
    """Check `obj` is weights_only-loadable; with `copy`, deep-copy it with every tensor moved to CPU.

    Device tensors go to pinned memory with non_blocking copies; the returned event (None without CUDA
    tensors) marks when they have all landed.
    """
    on_device: list[bool] = []
    result = _copy_tree(obj, where, copy, on_device)
    if not on_device:
        return result, None
    event = torch.cuda.Event()
    event.record()
    return result, event


def _copy_tree(obj: Any, where: str, copy: bool, on_device: list[bool]) -> Any:
    if isinstance(obj, torch.Tensor):
        if not copy:
            return obj
        if obj.device.type == "cuda":
            on_device.append(True)
            host = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=True)
            return host.copy_(obj.detach(), non_blocking=True)
        tensor = obj.detach()
        return tensor.clone() if tensor.device.type == "cpu" else tensor.to("cpu")
    if type(obj) in (dict, collections.OrderedDict):
        out = type(obj)((k, _copy_tree(v, f"{where}[{k!r}]", copy, on_device)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # module versions read by load_state_dict (e.g. BatchNorm)
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out if copy else obj
    if type(obj) in (list, tuple):
        out = type(obj)(_copy_tree(v, f"{where}[{i}]", copy, on_device) for i, v in enumerate(obj))
        return out if copy else obj
    if isinstance(obj, _PLAIN_TYPES):
        return obj
    raise TypeError(f"{where}: expected tensors, numbers, strings, lists, tuples or dicts (what "
                    f"torch.load(weights_only=True) can read back), received {type(obj).__name__}")


def _capture_rng() -> dict[str, Any]:
    """Generator states as tensors, ints, floats and lists: loadable with weights_only."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


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


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> tuple[int, str]:
    """Write via `write(file)` atomically and durably (`_files.atomic_open`); the size and sha256 written."""
    with atomic_open(path) as file:
        writer = _HashingWriter(file)
        write(cast(IO[bytes], writer))  # torch.save only needs write() and flush()
    return writer.size, writer.sha256.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> tuple[int, str]:
    return _atomic_write(path, lambda f: f.write(data))


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, entry: dict[str, Any]) -> None:
    size = path.stat().st_size
    if size != entry["size"]:
        raise CheckpointCorruptError(f"{path}: size {size} != manifest {entry['size']} (truncated?)")
    if _sha256_file(path) != entry["sha256"]:
        raise CheckpointCorruptError(f"{path}: sha256 mismatch with the manifest (file is corrupt)")


def _torch_load(path: Path, map_location: Any) -> dict[str, Any]:
    with open(path, "rb") as file:
        head = file.read(4)
    # torch.save writes a zip archive (legacy torch files are a pickle stream); anything else is not ours,
    # and sniffing it first keeps random bytes from being reported as "pickled code".
    if head != b"PK\x03\x04" and head[:1] != b"\x80":
        raise CheckpointCorruptError(f"{path}: not a torch file (starts with {head!r}, expected a zip archive)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        lines = str(error).splitlines()
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0])
        raise CheckpointUnsafeError(f"{path}: refuses pickled code: weights_only loading rejected an object "
                                    f"that could run code when unpickled ({reason.strip()})") from error
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as error:
        raise CheckpointCorruptError(f"{path}: not a torch file, or a damaged one ({error!r})") from error
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointCorruptError(f"{path}: a torch file, but not an opusclip-track checkpoint "
                                     f"(expected a dict with format={_FORMAT!r})")
    return payload


def _git_commit() -> str | None:
    """HEAD of the working directory's git repository, or None outside one (or without git)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


__all__ = ["CheckpointBarrier", "CheckpointCorruptError", "CheckpointError", "CheckpointInfo", "CheckpointManager",
           "CheckpointNotFoundError", "CheckpointSaveError", "CheckpointUnsafeError", "LoadedCheckpoint"]
