"""Read a run back from each backend into one common shape, for the tests that cover every backend."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from _wandb_reader import read_wandb_run


def tensorboard_accumulator(run_dir: str | Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0,
                                                       "tensors": 0})
    acc.Reload()
    return acc


def tensorboard_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    acc = tensorboard_accumulator(run_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Each key's `(true step, value)` pairs: the step is the row's `STEP_KEY` (W&B's `_step` only counts rows)."""
    from opusclip_track.backends.wandb import STEP_KEY

    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in read_wandb_run(run_dir)["history"]:
        for key, value in row.items():
            if not key.startswith("_") and key != STEP_KEY and isinstance(value, (int, float)):
                out[key].append((int(row[STEP_KEY]), float(value)))
    return dict(out)


def scalars(backend: str, run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """`{key: [(step, value), ...]}` as the named backend stored it."""
    readers: dict[str, Any] = {"tensorboard": tensorboard_scalars, "wandb": wandb_scalars}
    return readers[backend](run_dir)
