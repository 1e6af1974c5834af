"""The records that travel from the caller's thread to the worker, and on to the store and the backends.

The caller builds a record in microseconds (no conversion, no I/O); the worker turns raw values into plain
Python/NumPy data (`resolve_scalars`, `bin_histogram` and `MediaEncoder` in `_pipeline.py`) before any backend
sees it. Every record carries its step
and the wall time at which the caller logged it, so a backend that writes late still writes the true time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

RunStatus = Literal["finished", "failed"]
"""How a run ended: recorded in the store's meta and passed to every backend's `close`."""


@dataclass(slots=True)
class Scalars:
    """Several scalars at one step. Values may be numbers or device tensors until the worker resolves them."""

    step: int
    wall_time: float
    values: dict[str, Any]


@dataclass(slots=True)
class Hparams:
    """Hyperparameters of the run, with optional summary metrics for TensorBoard's HParams dashboard."""

    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0


@dataclass(slots=True)
class Text:
    name: str
    text: str
    step: int
    wall_time: float


@dataclass(slots=True)
class Histogram:
    """A distribution at one step. `values` is the raw tensor/array until the worker bins it."""

    name: str
    values: Any
    step: int
    wall_time: float
    bins: int = 64
    # Filled by the worker: bin edges (len bins+1), counts (len bins) and summary statistics, computed once
    # and shared by every backend.
    edges: np.ndarray | None = None
    counts: np.ndarray | None = None
    stats: dict[str, float] | None = None


MediaKind = Literal["video", "image", "figure", "table"]


@dataclass(slots=True)
class Media:
    """A clip, an image, a figure or a table.

    `payload` is what the caller handed over (a CPU copy of the tensor, a figure, rows); the worker fills
    `files` (files on disk under `media/`, by format: "mp4", "png", "json") and `encoded` (bytes in memory:
    "gif", "png", "markdown") before the backends run. `error` says why a file could not be written (the
    record is still stored and passed on, with what could be encoded).
    """

    kind: MediaKind
    name: str
    step: int
    wall_time: float
    payload: Any
    options: dict[str, Any] = field(default_factory=dict)
    caption: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    encoded: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class Artifact:
    """A file to version in the backends that support it (W&B artifacts): checkpoints, tables, reports."""

    name: str
    path: Path
    type: str
    aliases: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0


@dataclass(slots=True)
class ConfigUpdate:
    """Entries added to the run's configuration after start (metric protocol, model size, ...)."""

    values: dict[str, Any]
    wall_time: float = 0.0


@dataclass(slots=True)
class Graph:
    """A model's computation graph (a serialised TensorBoard `GraphDef`), traced on the caller's thread."""

    name: str
    graph_def: bytes
    num_nodes: int
    wall_time: float = 0.0


@dataclass(slots=True)
class Rewind:
    """A resumed run restarts at `step`: what was logged at steps >= `step` before is superseded."""

    step: int
    wall_time: float = 0.0


Record = Scalars | Hparams | Text | Histogram | Media | Artifact | ConfigUpdate | Graph | Rewind
