"""What the worker does with a batch: resolve values, write the store first, then fan out to backends.

Runs on the worker thread only. Every stage isolates failures: a record that cannot be converted is
reported and skipped (the others go on), a backend that raises is reported once, retried on later
batches, and never stops the store or the other backends.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._dispatch import Dispatcher
from .backends import Backend
from .records import Artifact, ConfigUpdate, Graph, Histogram, Hparams, Media, Record, Rewind, Scalars, Text
from .store import RunStore

log = logging.getLogger("opusclip_track")

MAX_ATTEMPTS = 5  # tries of one record by one backend before that backend gives it up
MAX_RETRY_RECORDS = 100_000  # per backend; beyond this, the store alone keeps them (replay: `opusclip-track sync`)


# ---- resolving raw values ------------------------------------------------------------------------------
def resolve_scalars(records: Sequence[Scalars]) -> None:
    """Turn every value into a float; all tensors of one device come over in one transfer (one sync)."""
    by_device: dict[torch.device, list[tuple[dict[str, Any], str, torch.Tensor]]] = {}
    for rec in records:
        values = rec.values
        for key, value in values.items():
            if type(value) is float:
                continue
            if isinstance(value, torch.Tensor):
                by_device.setdefault(value.device, []).append((values, key, value))
            else:
                values[key] = float(value)
    for device, items in by_device.items():
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        stacked = torch.stack([t.reshape(()).to(dtype) for _, _, t in items]).cpu().tolist()
        for (values, key, _), number in zip(items, stacked, strict=True):
            values[key] = number


def bin_histogram(record: Histogram) -> None:
    """Fill `edges`, `counts` and `stats` from the raw values (finite values only; NaN/Inf are counted)."""
    values = record.values
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    data = np.asarray(values, dtype=np.float64).ravel()
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        finite = np.zeros(1)
    counts, edges = np.histogram(finite, bins=record.bins)
    record.counts, record.edges = counts.astype(np.float64), edges
    record.stats = {"min": float(finite.min()), "max": float(finite.max()), "num": float(finite.size),
                    "sum": float(finite.sum()), "sum_squares": float(np.dot(finite, finite)),
                    "nonfinite": float(data.size - np.isfinite(data).sum())}
    record.values = None  # the raw tensor is no longer needed; free it early


def store_rows(records: Sequence[Record]) -> tuple[list[tuple[str, int, float, float]], list[tuple[Any, ...]]]:
    """The rows one batch adds to the local store: scalars, then everything else as events."""
    scalars = [(k, r.step, r.wall_time, v) for r in records if isinstance(r, Scalars)
               for k, v in r.values.items()]
    events: list[tuple[Any, ...]] = []
    for r in records:
        if isinstance(r, Text):
            events.append(("text", r.name, r.step, r.wall_time, {"text": r.text}, None))
        elif isinstance(r, Histogram):
            data = {"edges": r.edges.tolist() if r.edges is not None else None,
                    "counts": r.counts.tolist() if r.counts is not None else None, **(r.stats or {})}
            events.append(("histogram", r.name, r.step, r.wall_time, data, None))
        elif isinstance(r, Hparams):
            events.append(("hparams", "hparams", None, r.wall_time, {"params": r.params, "metrics": r.metrics},
                           None))
        elif isinstance(r, Media):
            main = r.files.get("mp4") or r.files.get("png") or r.files.get("json")
            events.append((r.kind, r.name, r.step, r.wall_time,
                           {"caption": r.caption, **r.options, "files": {k: str(p) for k, p in r.files.items()}},
                           str(main) if main else None))
        elif isinstance(r, ConfigUpdate):
            events.append(("config", "config", None, r.wall_time, r.values, None))
        elif isinstance(r, Graph):
            events.append(("graph", r.name, None, r.wall_time, {"num_nodes": r.num_nodes}, None))
        elif isinstance(r, Artifact):
            events.append(("artifact", r.name, None, r.wall_time,
                           {"type": r.type, "aliases": r.aliases, **r.metadata}, str(r.path)))
    return scalars, events


# ---- backends, isolated ------------------------------------------------------------------------------
@dataclass
class BackendSlot:
    """A backend plus its failure bookkeeping.

    Records a backend fails on are kept and retried with the next batches (a service that was down comes
    back); a record that still fails after `MAX_ATTEMPTS` tries is given up by this backend (it stays in the
    local store, for `opusclip-track sync`). The first error is reported once, not once per record.
    """

    backend: Backend
    started: bool = False
    errors: int = 0
    given_up: int = 0
    last_error: str | None = None
    retry: list[Record] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    reported: bool = False
    start_failures: int = 0
    next_start: float = 0.0  # time.monotonic() before which a failed start is not tried again

    def write(self, records: list[Record]) -> None:
        pending = self.retry + records
        if not self.started and not self._start():
            self.retry = pending[-MAX_RETRY_RECORDS:]  # kept for when it starts; the store has them anyway
            return
        try:
            failures = self.backend.write(pending)
        except Exception as exc:  # flush failed: the whole batch waits for the next try
            failures = [(r, exc) for r in pending]
        if self.retry and len(failures) < len(self.retry):
            log.warning("backend %r recovered: wrote records it had missed", self.backend.name)
        self._keep_for_retry(failures)

    def _start(self) -> bool:
        """Start the backend, at most once per back-off period (10 s, doubling to 5 min) after a failure."""
        if time.monotonic() < self.next_start:
            return False
        try:
            self.backend.start()
            self.started = True
            return True
        except Exception as exc:
            self.errors += 1
            self.start_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.next_start = time.monotonic() + min(300.0, 10.0 * 2 ** (self.start_failures - 1))
            if not self.reported:
                self.reported = True
                log.warning("backend %r could not start (%s); its records stay in the local store and it will be "
                            "tried again (reported once)", self.backend.name, self.last_error)
            return False

    def _keep_for_retry(self, failures: list[tuple[Record, Exception]]) -> None:
        self.retry = []
        for record, exc in failures:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if not self.reported:
                self.reported = True
                log.warning("backend %r failed (%s); its records stay in the local store, and it will be "
                            "retried on the next batch (reported once)", self.backend.name, self.last_error)
            tries = self.attempts.get(id(record), 0) + 1
            if tries >= MAX_ATTEMPTS or len(self.retry) >= MAX_RETRY_RECORDS:
                if self.given_up == 0:
                    log.warning("backend %r gave up a %s record after %d tries (%s); it is in the local store "
                                "(later give-ups are counted in the run's meta)", self.backend.name,
                                type(record).__name__, tries, self.last_error)
                self.given_up += 1
                self.attempts.pop(id(record), None)
                continue
            self.attempts[id(record)] = tries
            self.retry.append(record)
        live = {id(r) for r in self.retry}
        self.attempts = {k: v for k, v in self.attempts.items() if k in live}

    def close(self) -> None:
        if not self.started:
            return
        if self.retry:  # a last chance for what it missed
            self._keep_for_retry(self.backend.write(self.retry))
        try:
            self.backend.close()
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("backend %r failed while closing: %s", self.backend.name, self.last_error)


class Pipeline:
    """The worker's `process(batch)`: resolve, write the store, then hand the batch to the backends' stage.

    The backends run on a second thread (`fanout`, a `Dispatcher` of whole batches), so a slow backend (W&B
    starting, a network stall) never delays the store: what was handed over is in SQLite within a flush
    interval whatever the backends do. The fan-out stage is memory-bounded like the first one.

    Args:
        store: the run's local store (written first, always).
        slots: the enabled backends.
        media_dir: where encoded clips, images and tables are kept (`<run_dir>/media`).
        flush_interval_s, max_bytes: the fan-out stage's wake-up period and memory bound.
    """

    def __init__(self, store: RunStore, slots: list[BackendSlot], media_dir: Path, *, flush_interval_s: float,
                 max_bytes: int) -> None:
        self.store = store
        self.slots = slots
        self.prepare_media = MediaEncoder(media_dir)
        self.bad_records = 0
        self._bad_reported: set[str] = set()
        self.fanout: Dispatcher[list[Record]] = Dispatcher(self._write_backends, flush_interval_s=flush_interval_s,
                                                           max_bytes=max_bytes, name="opusclip-track-backends")

    def __call__(self, batch: list[Record]) -> None:
        records = self._resolve(batch)
        if not records:
            return
        for rec in records:
            if isinstance(rec, Rewind):  # the tracker sends it alone, between two flushes
                self.store.rewind(rec.step)
            elif isinstance(rec, ConfigUpdate):
                self.store.update_config(rec.values)
        scalars, events = store_rows(records)
        self.store.write(scalars, events)
        self.fanout.put(records, 256 * len(records) + sum(_media_bytes(r) for r in records))

    def _write_backends(self, batches: list[list[Record]]) -> None:
        records = [record for batch in batches for record in batch]
        for slot in self.slots:
            slot.write(records)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the backends' stage has written everything the store has."""
        return self.fanout.flush(timeout)

    def close(self) -> None:
        """Drain the backends' stage, then close every backend."""
        self.fanout.close()
        for slot in self.slots:
            slot.close()

    def _resolve(self, batch: list[Record]) -> list[Record]:
        scalars = [r for r in batch if isinstance(r, Scalars)]
        failed: set[int] = set()
        try:
            resolve_scalars(scalars)
        except Exception:  # one bad tensor: go record by record, so only that record is lost
            failed = {id(rec) for rec in scalars if not self._guard(resolve_scalars, [rec])}
        ok: list[Record] = []
        for rec in batch:
            if isinstance(rec, Histogram) and rec.counts is None:
                if not self._guard(bin_histogram, rec):
                    continue
            elif isinstance(rec, Media):
                if not self._guard(self.prepare_media, rec):
                    continue
            elif id(rec) in failed:
                continue
            ok.append(rec)
        return ok

    def _guard(self, fn: Callable[[Any], None], arg: Any) -> bool:
        try:
            fn(arg)
            return True
        except Exception as exc:
            self.bad_records += 1
            kind = type(arg).__name__ if not isinstance(arg, list) else "Scalars"
            if kind not in self._bad_reported:
                self._bad_reported.add(kind)
                log.error("opusclip-track worker: a %s record could not be converted and was skipped "
                          "(%s: %s); further failures of this kind are counted silently",
                          kind, type(exc).__name__, exc)
            return False



# ---- media, encoded on the worker ---------------------------------------------------------------------
class MediaEncoder:
    """Turns a `Media` record's payload into files under `<run_dir>/media/` and bytes for the backends.

    Video: uint8 frames -> MP4 (H.264, kept on disk, what W&B uploads) and an animated GIF (what TensorBoard
    plays in its Images tab). Image and figure: PNG. Table: JSON on disk and a Markdown table for TensorBoard.
    """

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir
        # Stems already used (files of a resumed run included): one listing here, not one per clip.
        self._used = {p.stem for p in media_dir.iterdir()} if media_dir.is_dir() else set()

    def __call__(self, record: Media) -> None:
        from . import media

        stem = self._stem(record)
        if record.kind == "video":
            payload = _wait_for_copy(record.payload)
            opts = record.options
            frames = media.video_to_frames(payload, layout=opts.pop("layout"), value_range=opts.pop("value_range"),
                                           reference=_wait_for_copy(opts.pop("reference")))
            fps = opts["fps"]
            record.files["mp4"] = media.encode_mp4(frames, self.media_dir / f"{stem}.mp4", fps)
            record.encoded["gif"] = media.encode_gif(frames, fps)
            opts.update(frames=int(frames.shape[0]), height=int(frames.shape[1]), width=int(frames.shape[2]))
        elif record.kind in ("image", "figure"):
            if record.kind == "figure":
                array = media.render_figure(record.payload, close=record.options.pop("close"))
            else:
                opts = record.options
                array = media.image_to_array(_wait_for_copy(record.payload), layout=opts.pop("layout"),
                                             value_range=opts.pop("value_range"), nrow=opts.pop("nrow"))
            png = media.encode_png(array)
            record.encoded["png"] = png
            record.files["png"] = _write_atomic(self.media_dir / f"{stem}.png", png)
            record.options.update(height=int(array.shape[0]), width=int(array.shape[1]))
        elif record.kind == "table":
            columns, rows = record.payload
            record.encoded["markdown"] = _markdown(columns, rows).encode()
            data = json.dumps({"columns": list(columns), "rows": rows}, default=str).encode()
            record.files["json"] = _write_atomic(self.media_dir / f"{stem}.json", data)
        record.payload = None if record.kind != "table" else record.payload  # free the frames early

    def _stem(self, record: Media) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", record.name).strip("_") or record.kind
        stem = f"{safe}_step{record.step:08d}"
        n = 1
        while stem in self._used:  # the same name logged twice at one step
            stem = f"{safe}_step{record.step:08d}_{n}"
            n += 1
        self._used.add(stem)
        return stem


def _media_bytes(record: Record) -> int:
    if isinstance(record, Media):
        return sum(len(b) for b in record.encoded.values())
    return 0


def _wait_for_copy(payload: Any) -> Any:
    """A device-to-host copy started on the caller's thread travels as (tensor, event): wait for it here."""
    if isinstance(payload, tuple):
        tensor, event = payload
        event.synchronize()
        return tensor
    return payload


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
