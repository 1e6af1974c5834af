"""Checkpoints: atomic, versioned, with top-k/best retention, safe loading, async save and a torchrun barrier.

Loading never executes pickled code: files are read with `torch.load(weights_only=True)`, so everything saved
(state dicts, RNG states, `extra`) is kept to tensors, numbers, strings, lists, tuples and dicts.

Modules, one idea each: `manager` (`CheckpointManager`: save, retention, look-up, load), `manifest` (the
manifest, its entries' checks and the files' size/sha256 verification), `background` (async save: the CPU
snapshot and the writer thread), `loading` (what a file holds, read with `weights_only`, RNG states), `barrier`
(rank 0 writes, the other ranks of a torchrun job wait), `errors`.

Example:
    >>> manager = CheckpointManager("checkpoints/run1", keep_last=3, monitor="val/loss", mode="min")
    >>> manager.save(model, optimizer, scheduler, epoch=3, step=1200, metrics={"val/loss": 0.41})
    >>> resumed = manager.load("latest", model, optimizer, scheduler)  # model/optimizer/RNG restored
    >>> start_step = resumed.step + 1
"""

from __future__ import annotations

from .barrier import CheckpointBarrier
from .errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CheckpointUnsafeError,
)
from .loading import LoadedCheckpoint
from .manager import CheckpointManager
from .manifest import MANIFEST_NAME, CheckpointInfo

__all__ = ["MANIFEST_NAME", "CheckpointBarrier", "CheckpointCorruptError", "CheckpointError", "CheckpointInfo",
           "CheckpointManager", "CheckpointNotFoundError", "CheckpointSaveError", "CheckpointUnsafeError",
           "LoadedCheckpoint"]
