"""Async saving: a CPU snapshot of the state taken at the call, written by one background thread.

`snapshot` copies every tensor to CPU memory so training may mutate the live tensors while the thread writes
(device tensors go to pinned memory with non_blocking copies, and an event marks when they have landed), and
checks on the way that everything is `weights_only`-loadable. `BackgroundWriter` runs one write at a time on a
non-daemon thread (interpreter exit waits for the write to finish) and hands its error to the caller's thread,
as TensorBoard's `_AsyncWriter` does.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointSaveError
from .loading import PLAIN_TYPES


def snapshot(obj: Any, where: str, copy: bool) -> tuple[Any, torch.cuda.Event | None]:
    """Check `obj` is weights_only-loadable; with `copy`, deep-copy it with every tensor moved to CPU.

    Returns:
        The copy (or `obj` itself without `copy`) and an event recorded after the device-to-host copies (None
        without CUDA tensors): synchronize it before reading the copy.

    Raises:
        TypeError: Something `torch.load(weights_only=True)` could not read back, named by its place in `where`.
    """
    on_device: list[bool] = []
    result = _copy_tree(obj, where, copy, on_device)
    if not on_device:
        return result, None
    event = torch.cuda.Event()
    event.record()
    return result, event


class BackgroundWriter:
    """One background write at a time; `wait` joins it and re-raises its error as `CheckpointSaveError`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: tuple[Path, BaseException] | None = None

    def start(self, path: Path, write: Callable[[], object],
              on_error: Callable[[BaseException], object]) -> None:
        """Run `write()` on a new thread (after the previous write: call `wait` first); a failure is kept for
        `wait` and passed to `on_error` on that thread."""
        def run() -> None:
            try:
                write()
            except BaseException as error:  # handed to the caller's thread by wait()
                self._error = (path, error)
                on_error(error)

        self._thread = threading.Thread(target=run, name=f"checkpoint-{path.name}")
        self._thread.start()  # not a daemon: interpreter exit waits for the write to finish

    def wait(self) -> None:
        """Block until the pending write is done; re-raise its error as `CheckpointSaveError` (once)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            path, error = self._error
            self._error = None
            raise CheckpointSaveError(f"background save of {path} failed: {error!r}") from error


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
    if isinstance(obj, PLAIN_TYPES):
        return obj
    raise TypeError(f"{where}: expected tensors, numbers, strings, lists, tuples or dicts (what "
                    f"torch.load(weights_only=True) can read back), received {type(obj).__name__}")


__all__ = ["BackgroundWriter", "snapshot"]
