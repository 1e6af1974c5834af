"""The checkpoint exceptions: one base class, and one subclass per way a checkpoint can fail."""

from __future__ import annotations


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


__all__ = ["CheckpointCorruptError", "CheckpointError", "CheckpointNotFoundError", "CheckpointSaveError",
           "CheckpointUnsafeError"]
