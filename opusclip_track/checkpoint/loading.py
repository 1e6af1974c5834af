"""Safe loading: what a checkpoint file holds, read back with `torch.load(weights_only=True)`.

Loading never executes pickled code, so everything saved (state dicts, RNG states, `extra`) is kept to what
`weights_only` reads without allow-listing (`PLAIN_TYPES`, tensors, lists, tuples and dicts); the generator
states are captured in those types too.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointCorruptError, CheckpointError, CheckpointUnsafeError

FORMAT = "opusclip-track-checkpoint"
FORMAT_VERSION = 1
# Values `torch.load(weights_only=True)` reads back without any allow-listing.
PLAIN_TYPES = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What `CheckpointManager.load` read: counters, metrics, `extra`, and the raw state dicts."""

    epoch: int
    step: int
    metrics: dict[str, float]
    extra: dict[str, Any]
    path: Path
    state_dicts: dict[str, Any] = field(repr=False, default_factory=dict)


def restore(path: Path, targets: dict[str, Any], *, map_location: Any, restore_rng: bool) -> LoadedCheckpoint:
    """Load the checkpoint at `path` into `targets` (name -> object with `load_state_dict`, or None to skip).

    Raises:
        CheckpointCorruptError: Not an opusclip-track checkpoint, or a damaged file.
        CheckpointUnsafeError: The file holds pickled code that `weights_only` refuses.
        CheckpointError: A target was given whose state the checkpoint does not hold.
    """
    payload = torch_load(path, map_location)
    for key, target in targets.items():
        if target is None:
            continue
        if payload.get(key) is None:
            raise CheckpointError(f"{path}: {key} was given but the checkpoint holds no {key} state")
        target.load_state_dict(payload[key])
    if restore_rng:
        _restore_rng(payload["rng"])
    return LoadedCheckpoint(epoch=payload["epoch"], step=payload["step"], metrics=payload["metrics"],
                            extra=payload["extra"], path=path, state_dicts={k: payload.get(k) for k in targets})


def torch_load(path: Path, map_location: Any) -> dict[str, Any]:
    """The payload of an opusclip-track checkpoint file, read with `weights_only=True` (errors as in `restore`)."""
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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointCorruptError(f"{path}: a torch file, but not an opusclip-track checkpoint "
                                     f"(expected a dict with format={FORMAT!r})")
    return payload


def capture_rng() -> dict[str, Any]:
    """Generator states (Python, NumPy, torch CPU and CUDA) as tensors, ints, floats and lists."""
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


__all__ = ["FORMAT", "FORMAT_VERSION", "PLAIN_TYPES", "LoadedCheckpoint", "capture_rng", "restore", "torch_load"]
