"""The records that travel from the caller's thread to the worker, and on to the store and the backends.

The caller builds a record in microseconds (no conversion, no I/O); the worker turns raw values into plain
Python/NumPy data (`resolve_scalars` and `bin_histogram` in `_pipeline.py`, `MediaEncoder` in
`_media_encoder.py`) before any backend sees it. Every record carries the wall time at which the caller logged
it (and its step, where it has one), so a backend that writes late still writes the true time.

`from_store_event` turns a row of the local store back into the record that wrote it, so a replay
(`opusclip-track sync`) hands a backend what it would have received during the run.

This module imports nothing heavy at import time (NumPy only where a stored histogram is rebuilt), so the
command line that reads stores stays light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    import numpy as np

RunStatus = Literal["finished", "failed"]
"""How a run ended: recorded in the store's meta and passed to every backend's `close`."""

HYPERPARAMETERS_EVENT = "hparams"
"""The store's event kind for a `Hyperparameters` record: the name every run has been stored with since the first
version (readers such as `RunStore.events("hparams")` and the reports use it), kept so old and new runs read alike."""


@dataclass(slots=True)
class Scalars:
    """Several scalars at one step. Values may be numbers or device tensors until the worker resolves them."""

    step: int
    wall_time: float
    values: dict[str, Any]


@dataclass(slots=True)
class Hyperparameters:
    """Hyperparameters of the run (`log_hyperparameters`), with optional summary metrics for TensorBoard's HParams
    dashboard and W&B's run summary (the tracker also logs those metrics as ordinary scalars)."""

    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0


@dataclass(slots=True)
class Text:
    """A text entry (Markdown in TensorBoard, HTML in W&B), already redacted."""

    name: str
    text: str
    step: int
    wall_time: float


AlertLevel = Literal["info", "warn", "error"]
"""How serious an alert is: W&B's `run.alert` levels (`INFO`, `WARN`, `ERROR`), in lower case."""

ALERT_EVENT = "alert"
"""The store's event kind of an `Alert` (the HTML report and `opusclip-track runs show` read it)."""


@dataclass(slots=True)
class Alert:
    """An alert: raised by `tracker.alert(...)` or by a rule on the worker (`opusclip_track.alerts`).

    Backends show it through their own hook (`Backend.log_alert`): W&B as `run.alert`, MLflow as a tag, TensorBoard
    as a text entry; a backend without that hook shows it as a text entry (`as_text`).

    Attributes:
        title: a short summary; with the same rule, what makes two alerts the same for W&B.
        text: what happened (already redacted).
        level: how serious it is.
        step: the training step it is about.
        wall_time: when it was raised (Unix seconds).
        rule: the rule that raised it (`"loss_spike"`, ...), or `"user"` for `tracker.alert`.
        key: what it is about: the metric key (`"train/loss"`), `"sys/gpu0"`, or the title of a user alert. An
            alert with the same rule and key as one raised less than `cooldown_s` earlier is not raised again.
        cooldown_s: its rate limit, in seconds (W&B's `wait_duration`).
    """

    title: str
    text: str
    level: AlertLevel
    step: int
    wall_time: float
    rule: str = "user"
    key: str = ""
    cooldown_s: float = 0.0

    @classmethod
    def new(cls, title: str, text: str, level: AlertLevel, step: int, wall_time: float, *, rule: str = "user",
            key: str | None = None, cooldown_s: float = 0.0) -> Alert:
        """An alert whose key defaults to its title."""
        return cls(title, text, level, step, wall_time, rule, title if key is None else key, cooldown_s)

    @property
    def name(self) -> str:
        """Where a backend shows it among text entries: `alerts/<title>`."""
        return f"alerts/{self.title}"

    def as_text(self) -> Text:
        """The alert as a text entry under `name`, its level and step before its text (`WARN at step 30: ...`):
        how a backend without an alert hook of its own shows it (`Backend.log_alert`)."""
        return Text(self.name, f"{self.level.upper()} at step {self.step}: {self.text}", self.step, self.wall_time)


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

    `payload` is what the caller handed over (a host copy of the tensor, a figure, `(columns, rows)`); the worker
    fills `files` (written under `media/`, by format: "mp4", "png", "json"), `encoded` (bytes in memory: "gif"
    for a clip, "png" for an image or figure) and `options` (after encoding: `fps`, `frames`, `height`, `width`
    of a clip; `height`, `width` of an image or figure), and frees the payload of everything but a table.
    `error` says why a file could not be written (the record is still stored and passed on, with what could be
    encoded in memory).

    A clip rebuilt from the store (`from_store_event`) has its MP4 in `files` and no GIF in `encoded`: a backend
    that shows GIFs makes one from the MP4.
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
    """A file to version in the backends that keep files (W&B artifacts, MLflow artifacts): checkpoints, tables."""

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


Record = Scalars | Hyperparameters | Text | Alert | Histogram | Media | Artifact | ConfigUpdate | Graph | Rewind


# ---- into the store and back -----------------------------------------------------------------------------
ScalarRow = tuple[str, int, float, float]
"""A scalar's row in the store: `(key, step, wall_time, value)`."""
EventRow = tuple[str, str, int | None, float, Any, str | None]
"""Any other record's row in the store: `(kind, name, step, wall_time, data, path)`."""


def record_rows(r: Record) -> tuple[list[ScalarRow], EventRow | None]:
    """The store rows of one record: its scalar rows, or its one event row (None for a `Rewind`)."""
    if isinstance(r, Scalars):
        return [(k, r.step, r.wall_time, v) for k, v in r.values.items()], None
    event: EventRow | None = None
    if isinstance(r, Alert):
        event = (ALERT_EVENT, r.title, r.step, r.wall_time, {"title": r.title, "text": r.text, "level": r.level,
                                                            "rule": r.rule, "key": r.key,
                                                            "cooldown_s": r.cooldown_s}, None)
    elif isinstance(r, Text):
        event = ("text", r.name, r.step, r.wall_time, {"text": r.text}, None)
    elif isinstance(r, Histogram):
        data = {"edges": r.edges.tolist() if r.edges is not None else None,
                "counts": r.counts.tolist() if r.counts is not None else None, "bins": r.bins, **(r.stats or {})}
        event = ("histogram", r.name, r.step, r.wall_time, data, None)
    elif isinstance(r, Hyperparameters):
        event = (HYPERPARAMETERS_EVENT, HYPERPARAMETERS_EVENT, None, r.wall_time,
                 {"params": r.params, "metrics": r.metrics}, None)
    elif isinstance(r, Media):
        main = r.files.get("mp4") or r.files.get("png") or r.files.get("json")
        data = {"caption": r.caption, **r.options, "files": {k: str(p) for k, p in r.files.items()}}
        if r.error is not None:
            data["error"] = r.error
        event = (r.kind, r.name, r.step, r.wall_time, data, str(main) if main else None)
    elif isinstance(r, ConfigUpdate):
        event = ("config", "config", None, r.wall_time, r.values, None)
    elif isinstance(r, Graph):
        event = ("graph", r.name, None, r.wall_time, {"num_nodes": r.num_nodes}, None)
    elif isinstance(r, Artifact):
        event = ("artifact", r.name, None, r.wall_time, {"type": r.type, "aliases": r.aliases, **r.metadata},
                 str(r.path))
    return [], event


def from_store_event(event: dict[str, Any]) -> Record | None:
    """The record that wrote `event`, a row of `RunStore.events()` (`kind`, `name`, `step`, `wall_time`, `data`,
    `path`), as a backend would have received it during the run; None for what cannot be replayed.

    * text, alert, histogram (bins, counts and statistics as binned), hyperparameters (stored as `"hparams"`), config
      update, artifact (its file path as stored);
    * media: `files` as written under `media/` and `options` as encoded; an image's or figure's PNG is read
      back into `encoded["png"]`, a table's rows from its JSON file into `payload`. A file that is gone leaves
      `error` saying so (and the record without those bytes); a clip's GIF is not rebuilt here (see `Media`);
    * None for a model graph (only its size is stored) and for kinds this version does not know.

    Example:
        >>> from opusclip_track.store import RunStore                          # doctest: +SKIP
        >>> records = [r for r in map(from_store_event, RunStore("runs/x").events()) if r is not None]
    """
    kind, name, step, wall_time, data = (event["kind"], event["name"], event["step"], event["wall_time"],
                                         event.get("data") or {})
    if kind == "text":
        return Text(name, data["text"], step, wall_time)
    if kind == ALERT_EVENT:
        title = str(data.get("title") or name)
        return Alert.new(title, str(data.get("text") or ""), data.get("level") or "warn",
                         step if step is not None else 0, wall_time, rule=str(data.get("rule") or "user"),
                         key=data.get("key"), cooldown_s=float(data.get("cooldown_s") or 0.0))
    if kind == HYPERPARAMETERS_EVENT:
        return Hyperparameters(dict(data["params"]), dict(data.get("metrics") or {}), wall_time)
    if kind == "config":
        return ConfigUpdate(dict(data), wall_time)
    if kind == "histogram":
        return _stored_histogram(name, step, wall_time, data)
    if kind == "artifact":
        info = dict(data)
        return Artifact(name, Path(event["path"]), info.pop("type"), list(info.pop("aliases") or []), info,
                        wall_time)
    if kind in get_args(MediaKind):
        return _stored_media(kind, name, step, wall_time, data)
    return None


def _stored_histogram(name: str, step: int, wall_time: float, data: dict[str, Any]) -> Histogram:
    import numpy as np  # only here: reading a store's list of runs must not import NumPy

    stats = {k: float(v) for k, v in data.items() if k not in ("edges", "counts", "bins")}
    counts = np.asarray(data["counts"] or [], dtype=np.float64)
    bins = int(data.get("bins") or max(1, counts.size))  # runs stored before the bins were kept: as binned
    return Histogram(name, None, step, wall_time, bins=bins,
                     edges=np.asarray(data["edges"] or [], dtype=np.float64), counts=counts, stats=stats)


def _stored_media(kind: MediaKind, name: str, step: int, wall_time: float, data: dict[str, Any]) -> Media:
    options = {k: v for k, v in data.items() if k not in ("caption", "files", "error")}
    files = {fmt: Path(path) for fmt, path in (data.get("files") or {}).items()}
    record = Media(kind, name, step, wall_time, None, options, data.get("caption"), files, error=data.get("error"))
    try:
        if kind == "table" and "json" in files:
            table = json.loads(files["json"].read_bytes())
            record.payload = (table["columns"], table["rows"])
        elif kind in ("image", "figure") and "png" in files:
            record.encoded["png"] = files["png"].read_bytes()
    except OSError as exc:
        record.error = f"stored file not readable: {type(exc).__name__}: {exc}"
    return record
