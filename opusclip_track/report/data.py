"""Collect what a report shows from the runs' local stores, through `RunStore`'s public methods only.

`resolve_runs` turns the command line's RUN_OR_GLOB arguments into run directories; `load_run` reads one run
into a `RunData`: its meta, flattened config and hyperparameters, the chosen scalar series as numpy arrays,
final values, system load, per-frame quality tables, clips, the best checkpoint and alerts.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opusclip_track.store import (
    DB_NAME,
    RunStore,
    UnreadableRunError,
    health_problems,
    list_runs,
    open_run,
    run_settings,
    setting,
)

__all__ = [
    "DEFAULT_KEYS", "GROUP_CANDIDATES", "PerFrameTable", "RunData", "common_prefix", "group_runs", "load_run",
    "match_keys", "resolve_runs",
]

# Curves and statistics when --keys is not given: the losses and every video-quality metric.
DEFAULT_KEYS: tuple[str, ...] = ("train/loss", "val/loss", "video/*")
# Tried in order when --group-by is not given: the first that splits the runs into two or more groups wins
# (compare_models.py puts every model's runs in one run group, so the model is what tells them apart). Runs of the
# training recipe (quick_start, compare_models, sweep trials) hold their model as `train.model`; a sweep over the
# model also as `hparams.model`, with the same value, so it adds nothing. `model`: a config key of the user's own.
GROUP_CANDIDATES: tuple[str, ...] = ("group", "train.model", "model")


@dataclass
class PerFrameTable:
    """A `<prefix>/per_frame` table written by `evaluate_videos`: quality against generated-frame index."""

    name: str
    step: int | None
    columns: list[str]
    rows: list[list[Any]]

    def column(self, name: str) -> np.ndarray:
        """One column as float64 (None and non-numbers become NaN)."""
        i = self.columns.index(name)
        return np.array([_as_float(row[i]) for row in self.rows], dtype=np.float64)


@dataclass
class RunData:
    """One run as the report sees it."""

    name: str
    path: Path
    status: str
    error: str | None = None
    group: str = ""
    experiment: str = ""
    created_at: float | None = None
    duration_s: float | None = None
    steps: int | None = None
    num_scalars: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # `store.run_settings`: "train.lr", "hparams.width"
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key -> (steps, values)
    finals: dict[str, float] = field(default_factory=dict)
    system: dict[str, tuple[float, float]] = field(default_factory=dict)  # sys/* key -> (mean, max)
    per_frame: list[PerFrameTable] = field(default_factory=list)
    videos: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoint: dict[str, Any] | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    health_problems: list[str] = field(default_factory=list)
    unreadable: str | None = None


def resolve_runs(patterns: Sequence[str], log_dir: str | Path = "runs") -> list[Path]:
    """Run directories for RUN_OR_GLOB arguments: a run directory, a run name under `log_dir`, or a glob of
    either (`'runs/cmp-*'`, `'cmp-*'`). Order: as given, each glob's matches sorted by name; no duplicates.

    Raises:
        ValueError: a pattern that matches no run, naming it and the runs there are.
    """
    log_dir = Path(log_dir)
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = _matches(pattern, log_dir)
        if not matches:
            known = ", ".join(p.name for p in list_runs(log_dir)) if log_dir.is_dir() else ""
            raise ValueError(f"RUN_OR_GLOB: expected a run directory, a run name under {log_dir}/ or a glob of "
                             f"them, received {pattern!r}, which matches no run (runs under {log_dir}/: "
                             f"{known or 'none'})")
        for path in matches:
            found.setdefault(path.resolve(), None)
    return list(found)


def _matches(pattern: str, log_dir: Path) -> list[Path]:
    for candidate in (Path(pattern), log_dir / pattern):
        if (candidate / DB_NAME).is_file():
            return [candidate]
    if not glob.has_magic(pattern):
        return []
    paths = {Path(p) for p in glob.glob(pattern)} | set(log_dir.glob(pattern))
    return sorted((p for p in paths if (p / DB_NAME).is_file()), key=lambda p: p.name)


def match_keys(available: Iterable[str], wanted: Sequence[str]) -> list[str]:
    """The available keys that match `wanted` (exact names or globs such as `video/*`), in the order asked."""
    available = list(available)
    chosen: dict[str, None] = {}
    for pattern in wanted:
        for key in sorted(available) if glob.has_magic(pattern) else [pattern]:
            if key in available and fnmatch.fnmatchcase(key, pattern):
                chosen.setdefault(key, None)
    return list(chosen)


def common_prefix(names: Sequence[str]) -> str:
    """The prefix all `names` share, cut after its last separator (`-`, `_`, `.`, `/`), so the rest of each name
    is what tells the runs apart: `cmp-2026-unet-seed0`, `cmp-2026-vit-seed1` -> `cmp-2026-`. Empty when it
    would leave a name empty or there are fewer than two names."""
    if len(names) < 2:
        return ""
    shared = os.path.commonprefix(list(names))
    cut = max(shared.rfind(c) for c in "-_./") + 1
    prefix = shared[:cut]
    return prefix if all(len(n) > len(prefix) for n in names) else ""


def load_run(path: str | Path, keys: Sequence[str]) -> RunData:
    """Read one run. A store SQLite cannot read gives a `RunData` with `unreadable` set, not an exception, so
    one broken run never hides the others in a report."""
    path = Path(path)
    try:
        with open_run(path) as store:
            return _read(store, path, keys)
    except (UnreadableRunError, json.JSONDecodeError, OSError) as error:
        cause = error.__cause__ if isinstance(error, UnreadableRunError) else error  # SQLite's own error
        return RunData(path.name, path, "unreadable", unreadable=f"{type(cause).__name__}: {cause}")


def _read(store: RunStore, path: Path, keys: Sequence[str]) -> RunData:
    meta = store.meta()
    run = RunData(name=str(meta.get("run_name") or path.name), path=path, status=str(meta.get("status", "?")),
                  error=meta.get("error"), group=str(meta.get("group") or ""),
                  experiment=str(meta.get("experiment_name") or ""), created_at=_float(meta.get("created_at")),
                  steps=store.max_step(), num_scalars=store.num_scalars())
    run.settings = run_settings(store)
    summary = store.summary()  # one row per key: finals, system load and the last time need no curve
    last_time = max([run.created_at or 0.0, *(s.last_wall_time for s in summary.values())])
    for key in match_keys(summary, keys):
        # Every point, not `max_points`: the smoothed curve is the mean of each bucket of the full series.
        steps, _, values = store.history_arrays(key)
        run.series[key] = (steps.astype(np.float64), values)
        run.finals[key] = summary[key].last_value
    for key, stats in summary.items():
        if key.startswith("sys/") and not math.isnan(stats.mean):
            run.system[key] = (stats.mean, stats.max)
    events = store.events()
    run.per_frame = [t for t in (_per_frame(e, path) for e in events) if t is not None]
    run.videos = [_with_file(e, path) for e in events if e["kind"] == "video"]
    run.alerts = [e for e in events if e["kind"] == "alert"]
    run.best_checkpoint = _best_checkpoint(events)
    if events:
        last_time = max(last_time, max(float(e["wall_time"]) for e in events))
    finished = _float(meta.get("finished_at"))
    if run.created_at is not None:
        run.duration_s = (finished if finished is not None else last_time) - run.created_at
    health = meta.get("health")
    run.health_problems = health_problems(health) if isinstance(health, dict) else []  # none recorded: not closed
    return run


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _as_float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _media_file(path: str | None, run_dir: Path) -> Path | None:
    """A media file of the run: its recorded path, or the same name under the run's media/ (a moved run)."""
    if not path:
        return None
    recorded = Path(path)
    if recorded.is_file():
        return recorded
    moved = run_dir / "media" / recorded.name
    return moved if moved.is_file() else recorded


def _per_frame(event: dict[str, Any], run_dir: Path) -> PerFrameTable | None:
    if event["kind"] != "table" or not event["name"].endswith("/per_frame"):
        return None
    file = _media_file(((event["data"] or {}).get("files") or {}).get("json") or event["path"], run_dir)
    try:
        table = json.loads(file.read_text()) if file is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(table, dict) or "t" not in (table.get("columns") or []):
        return None
    return PerFrameTable(event["name"], event["step"], list(table["columns"]), list(table.get("rows") or []))


def _with_file(event: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    data = dict(event["data"] or {})
    file = _media_file((data.get("files") or {}).get("mp4") or event["path"], run_dir)
    return {**event, "data": data, "file": file}


def _best_checkpoint(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The model artifact the tracker records at close (the best checkpoint, the latest without a monitor)."""
    models = [e for e in events if e["kind"] == "artifact" and (e["data"] or {}).get("type") == "model"]
    if not models:
        return None
    event = models[-1]
    data = dict(event["data"])
    return {"path": event["path"], "step": data.pop("step", None),
            "metrics": {k: v for k, v in data.items() if k not in ("type", "aliases", "epoch", "sha256")}}


def group_runs(runs: Sequence[RunData], group_by: str | None) -> tuple[str, dict[str, list[RunData]]]:
    """Runs by group: `group_by` (a meta field such as `group`, a config key such as `train.model`, or
    `hparams.<name>`), or when None the first of `GROUP_CANDIDATES` that splits them into two or more groups.

    Returns:
        The key used and `{group value: runs}` in first-seen order; a run without the key is in "(none)".
    """
    if group_by:
        chosen = group_by
    else:
        splits = [key for key in GROUP_CANDIDATES if len({_group_value(run, key) for run in runs}) >= 2]
        named = [key for key in GROUP_CANDIDATES if any(_group_value(run, key) != "(none)" for run in runs)]
        chosen = (splits or named or ["group"])[0]
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        groups.setdefault(_group_value(run, chosen), []).append(run)
    return chosen, groups


def _group_value(run: RunData, key: str) -> str:
    if key == "group":
        value: Any = run.group or None
    elif key in ("status", "experiment"):
        value = getattr(run, key)
    else:
        value = setting(run.settings, key)
    if value is None or value == "":
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)
