"""Replay a run's local store into a backend: what `opusclip-track sync RUN --to BACKEND` does.

The store is the write-ahead source of truth: every scalar, clip, image, table, figure, histogram, text, alert,
hyperparameter set, config update and the best-checkpoint artifact the run logged is in it. A replay
reads them back through the store's public readers (`RunStore.scalar_batches`, `RunStore.events`), turns each
event back into the record that wrote it (`records.from_store_event`), and hands them, in logging order, to a
backend of the registry: W&B after it was unreachable or off (`use_wandb=False`), MLflow after an outage,
TensorBoard for a run that had it off. Nothing here names a backend: a new one in the registry replays for free.

Where it writes: the run's own directory, as if the backend had been on during the run, so
`tensorboard --logdir runs` shows the run once under its own name, W&B continues the same run id (offline
under `<run>/wandb/` without an API key: upload it with `wandb sync`), and MLflow the same MLflow run. A backend
whose files may already hold the run (`Backend.replay_rewinds`: TensorBoard) first gets `Rewind(0)`, the notice a
resumed run sends: "what you hold from step 0 on is superseded by what follows" (TensorBoard writes its restart
marker, so its readers drop what an earlier event file held instead of showing every point twice). The others do
not: MLflow would record that the run was resumed, which a replay is not.

Example:
    >>> from opusclip_track.sync import sync
    >>> result = sync("runs/my-run", "wandb")                      # doctest: +SKIP
    >>> result.counts                                               # doctest: +SKIP
    {'scalars': 1000, 'video': 5, 'table': 1, 'image': 1, 'artifact': 1, 'hyperparameters': 1}
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from .backends import Backend, get_backend_class
from .config import REDACTED, TrackingConfig
from .records import Record, Rewind, RunStatus, Scalars, from_store_event
from .store import RunStore, open_run

__all__ = ["SyncResult", "replay_records", "sync"]

BATCH = 1000  # records per backend write: MLflow's 1000-metrics request, one W&B/TensorBoard flush each


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What a replay sent.

    Attributes:
        backend: the registry name it went to.
        run_dir: the run replayed (the backend wrote under it).
        status: the run's status as stored, which the backend was closed with ("finished" or "failed").
        counts: records sent by kind: "scalars" counts values, the others records ("video", "image", "table",
            "figure", "histogram", "text", "alert", "hyperparameters", "config update", "artifact").
    """

    backend: str
    run_dir: Path
    status: RunStatus
    counts: dict[str, int]

    def describe(self) -> str:
        """`"1000 scalars, 5 video, 1 artifact"`: what was sent, biggest first."""
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items(), key=lambda kv: -kv[1])) or "nothing"


def replay_records(store: RunStore) -> Iterator[Record]:
    """Every record the store holds, rebuilt, in logging order (scalars and events merged by wall time).

    Scalars come in the groups they were logged in (`RunStore.scalar_batches`); events (alerts included, which
    reach a backend's `log_alert`) through `records.from_store_event`, which skips what cannot be replayed (a model
    graph is stored as its size only; a kind this version does not know).
    """
    scalars = (Scalars(step, wall, values) for step, wall, values in store.scalar_batches())
    events = (r for r in map(from_store_event, store.events()) if r is not None)
    return heapq.merge(scalars, events, key=_wall_time)


def _wall_time(record: Record) -> float:
    return record.wall_time


def sync(run_dir: str | Path, backend: str, *, batch: int = BATCH) -> SyncResult:
    """Replay a run's store into `backend` (a name of `opusclip_track.backends.REGISTRY`).

    Returns only after the backend's `close(status)`, which returns when what it wrote is complete on disk
    (a W&B offline run with its exit record, an MLflow run terminated), so a reader started next sees it all.

    Args:
        run_dir: the run directory (holding `run.db`).
        backend: the registry name.
        batch: records per backend write.

    Raises:
        ValueError: an unknown backend name (listing the registry), or `opusclip_track.store.UnreadableRunError`.
        RuntimeError: the backend failed records (the first error named); the backend is still closed.
    """
    run_dir = Path(run_dir)
    cls = get_backend_class(backend)
    with open_run(run_dir) as store:
        stored = store.config()
        status: RunStatus = "finished" if store.meta().get("status") == "finished" else "failed"
        sink = cls(_config(stored, run_dir), run_dir, stored)
        sink.start()
        counts: Counter[str] = Counter()
        try:
            if cls.replay_rewinds:
                _send(sink, [Rewind(0)])  # alone and first: a backend's restart marker must precede what it hides
            for chunk in _chunks(replay_records(store), batch):
                _send(sink, chunk)
                counts.update(_kinds(chunk))
        finally:
            sink.close(status)  # also after a failure: the backend's run ends with the run's own status
    return SyncResult(backend, run_dir, status, dict(counts))


def _config(stored: dict[str, object], run_dir: Path) -> TrackingConfig:
    """The run's `TrackingConfig` as stored, resuming it (the backend continues the same run).

    A setting that lost a secret (an MLflow URI with its password) is not usable as stored: its default applies
    ($MLFLOW_TRACKING_URI, ...). The notes are only shown, so they stay, redacted.
    """
    fields = {f.name for f in dataclasses.fields(TrackingConfig)}
    options = {k: v for k, v in stored.items() if k in fields and (k == "notes" or REDACTED not in str(v))}
    options.update(resume=True, log_dir=str(run_dir.parent))
    options.setdefault("run_name", run_dir.name)
    return TrackingConfig.from_dict(options)


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _kinds(records: list[Record]) -> Counter[str]:
    """Scalar values, and other records by kind: a media record's own (`video`, `table`, ...), else its type's
    name in words (`Hyperparameters` -> `hyperparameters`, `ConfigUpdate` -> `config update`)."""
    counts: Counter[str] = Counter()
    for record in records:
        if isinstance(record, Scalars):
            counts["scalars"] += len(record.values)
        else:
            words = re.sub(r"(?<!^)(?=[A-Z])", " ", type(record).__name__).lower()
            counts[getattr(record, "kind", None) or words] += 1
    return counts


def _send(sink: Backend, records: list[Record]) -> None:
    failures = sink.write(records)
    if failures:
        record, exc = failures[0]
        raise RuntimeError(f"sync: {len(failures)} of {len(records)} records failed in {sink.name}, first a "
                           f"{type(record).__name__}: {type(exc).__name__}: {exc}")
