"""What the worker does with a batch: resolve values, write the store first, then fan out to backends.

Runs on the worker thread only. Every stage isolates failures: a record that cannot be converted is
reported and skipped (the others go on); a record the store rejects for itself is found by bisecting the
batch and skipped alone; a store that cannot be written (full disk, read-only or removed run directory)
holds the records in memory and retries them with every batch while the backends still get them; a
backend that raises (even `SystemExit`) is reported once, retried on later batches, and never stops the
store or the other backends. Every such event is counted in `Pipeline.health`.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._dispatch import Dispatcher
from .backends import Backend
from .config import redact_secrets
from .records import (
    HYPERPARAMETERS_EVENT,
    Artifact,
    ConfigUpdate,
    Graph,
    Histogram,
    Hyperparameters,
    Media,
    Record,
    Rewind,
    RunStatus,
    Scalars,
    Text,
)
from .store import RunStore

log = logging.getLogger("opusclip_track")

MAX_ATTEMPTS = 5  # tries of one record by one backend before that backend gives it up
MAX_RETRY_RECORDS = 100_000  # per backend; beyond this, the store alone keeps them (replay: `opusclip-track sync`)
# Rows held in memory while the store cannot be written (about 100 bytes each: ~50 MB); beyond, the oldest
# records are dropped and counted as lost.
MAX_PENDING_ROWS = 500_000


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
    """Fill `edges`, `counts` and `stats` from the raw values (finite values only; NaN/Inf are counted).

    With no finite value at all (all NaN, say: only visible here for a device tensor) the histogram is
    empty: no bins (`edges` and `counts` are empty arrays), `num` 0, `min`/`max` NaN, and `nonfinite` says
    how many values there were. Nothing is invented.
    """
    values = record.values
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    data = np.asarray(values, dtype=np.float64).ravel()
    finite = data[np.isfinite(data)]
    nonfinite = float(data.size - finite.size)
    if finite.size == 0:
        record.counts, record.edges = np.zeros(0), np.zeros(0)
        record.stats = {"min": float("nan"), "max": float("nan"), "num": 0.0, "sum": 0.0, "sum_squares": 0.0,
                        "nonfinite": nonfinite}
    else:
        counts, edges = np.histogram(finite, bins=record.bins)
        record.counts, record.edges = counts.astype(np.float64), edges
        record.stats = {"min": float(finite.min()), "max": float(finite.max()), "num": float(finite.size),
                        "sum": float(finite.sum()), "sum_squares": float(np.dot(finite, finite)),
                        "nonfinite": nonfinite}
    record.values = None  # the raw tensor is no longer needed; free it early


ScalarRow = tuple[str, int, float, float]
EventRow = tuple[str, str, int | None, float, Any, str | None]


def store_rows(records: Sequence[Record]) -> tuple[list[ScalarRow], list[EventRow]]:
    """The rows a batch adds to the local store: scalars, then everything else as events."""
    scalars: list[ScalarRow] = []
    events: list[EventRow] = []
    for record in records:
        rows, event = record_rows(record)
        scalars += rows
        if event is not None:
            events.append(event)
    return scalars, events


def record_rows(r: Record) -> tuple[list[ScalarRow], EventRow | None]:
    """The store rows of one record: its scalar rows, or its one event row (None for a `Rewind`)."""
    if isinstance(r, Scalars):
        return [(k, r.step, r.wall_time, v) for k, v in r.values.items()], None
    event: EventRow | None = None
    if isinstance(r, Text):
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


# ---- the store, record by record when it must be --------------------------------------------------------
@dataclass(slots=True)
class _Unit:
    """One record's share of a store transaction: its rows only (a held unit does not keep the record, and
    with it a clip's encoded bytes, alive)."""

    record_id: int
    kind: str
    scalars: list[ScalarRow]
    event: EventRow | None
    config: dict[str, Any] | None = None  # a ConfigUpdate's entries
    rewind: int | None = None  # a Rewind's step

    @classmethod
    def of(cls, record: Record) -> _Unit:
        rows, event = record_rows(record)
        return cls(id(record), type(record).__name__, rows, event,
                   record.values if isinstance(record, ConfigUpdate) else None,
                   record.step if isinstance(record, Rewind) else None)

    @property
    def rows(self) -> int:
        return len(self.scalars) + (self.event is not None)


def _cannot_land(exc: BaseException) -> bool:
    """True for errors of the store itself (full disk, read-only or removed file, I/O error), as opposed to
    errors of one record's content (an int SQLite cannot hold, text it cannot encode, a value JSON rejects)."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError))


class StoreWriter:
    """Writes batches into the run store, one transaction each, so that one bad record never loses others.

    * A transaction that fails because of a record's content is bisected until the records at fault are
      found; those are rejected (counted, reported once, not passed on: no backend could take them either)
      and everything else lands.
    * A transaction that fails because the store cannot be written (full disk, read-only or removed run
      directory) keeps the records in memory, bounded by `MAX_PENDING_ROWS` (beyond it the oldest are
      dropped and counted as lost), and tries them again before every later batch and once more at close.
      Reported once when it starts and once when it recovers; the backends get the records meanwhile.
    """

    def __init__(self, store: RunStore, max_pending_rows: int = MAX_PENDING_ROWS) -> None:
        self.store = store
        self.max_pending_rows = max_pending_rows
        self.pending: list[_Unit] = []
        self.rejected = 0  # records whose content the store can never hold
        self.failed_writes = 0  # transactions the store could not take (full disk, read-only, removed)
        self.lost = 0  # records that never reached the store: dropped from `pending`, or still there at close
        self.last_error: str | None = None
        self._reported: set[str] = set()

    def write(self, records: Sequence[Record]) -> list[Record]:
        """Write what is pending, then `records`. Returns the records to pass on to the backends (all but
        the rejected ones, whether they landed now or are held for the next try)."""
        units: list[_Unit] = []
        rejected: set[int] = set()
        for record in records:
            try:
                units.append(_Unit.of(record))
            except Exception as exc:
                self._reject(type(record).__name__, exc)
                rejected.add(id(record))
        held_before = len(self.pending)
        held, failed = self._write(self.pending + units)
        rejected.update(u.record_id for u in failed)
        self._hold(held, held_before)
        return [r for r in records if id(r) not in rejected]

    def close(self) -> None:
        """A last try for what is held; what still cannot land is counted as lost and reported."""
        if self.pending:
            held, _ = self._write(self.pending)
            self.pending = []
            if held:
                self.lost += len(held)
                log.error("opusclip-track: %d records could not be written to the local store %s (%s); the "
                          "backends received them", len(held), self.store.path, self.last_error)

    @property
    def all_stored(self) -> bool:
        """True while every record handed to the store so far is in it."""
        return not self.pending and self.lost == 0 and self.rejected == 0

    def _write(self, units: list[_Unit]) -> tuple[list[_Unit], list[_Unit]]:
        """Write `units`; returns (held: the store cannot be written now, rejected: bad content)."""
        if not units:
            return [], []
        # A Rewind applies to what was logged before it: it opens a transaction of its own.
        cut = next((i for i, u in enumerate(units) if i and u.rewind is not None), 0)
        if not cut:
            try:
                self._transaction(units)
                return [], []
            except Exception as exc:
                if _cannot_land(exc):
                    self.failed_writes += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._report_once("store", "opusclip-track: the local store %s cannot be written (%s); records "
                                      "are held in memory and written as soon as it can be, and the backends "
                                      "still get them (reported once)", self.store.path, self.last_error)
                    return units, []
                if len(units) == 1:
                    self._reject(units[0].kind, exc)
                    return [], units
            cut = len(units) // 2  # bisect: only the records at fault are rejected
        held, rejected = self._write(units[:cut])
        if held:  # the store itself failed half-way: keep the untried part too
            return held + units[cut:], rejected
        held, more = self._write(units[cut:])
        return held, rejected + more

    def _transaction(self, units: list[_Unit]) -> None:
        self.store.write([row for u in units for row in u.scalars],
                         [u.event for u in units if u.event is not None],
                         config_updates=[u.config for u in units if u.config is not None], rewind=units[0].rewind)

    def _hold(self, held: list[_Unit], held_before: int) -> None:
        if held_before and not held:
            log.warning("opusclip-track: the local store %s can be written again: %d held records were written",
                        self.store.path, held_before)
            self._reported.discard("store")
        rows = sum(u.rows for u in held)
        drop = 0
        while rows > self.max_pending_rows and drop < len(held):
            rows -= held[drop].rows
            drop += 1
        if drop:
            self.lost += drop
            self._report_once("lost", "opusclip-track: the local store has been unwritable for too long: the %d "
                              "oldest held records were dropped from memory (they reached the backends; later "
                              "drops are counted in the run's health)", drop)
        self.pending = held[drop:]

    def _reject(self, kind: str, exc: Exception) -> None:
        self.rejected += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._report_once("reject", "opusclip-track: the local store cannot hold a %s record (%s); it was skipped, "
                          "the rest of its batch was written (later ones are counted in the run's health)",
                          kind, self.last_error)

    def _report_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._reported:
            self._reported.add(kind)
            log.warning(message, *args)


# ---- backends, isolated ------------------------------------------------------------------------------
@dataclass
class BackendSlot:
    """A backend plus its failure bookkeeping.

    Records a backend fails on are kept and retried with the next batches (a service that was down comes
    back); a record that still fails after `MAX_ATTEMPTS` tries is given up by this backend (it stays in the
    local store, for `opusclip-track sync`). The first error is reported once, not once per record. Every
    call into the backend is guarded against any exception, `SystemExit` and `KeyboardInterrupt` included
    (a backend must not stop the worker). `given_up` counts exactly the records this backend never
    received: given up after their tries, beyond `MAX_RETRY_RECORDS`, or still waiting at close.
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
    got_hyperparameters: bool = False

    @property
    def name(self) -> str:
        return str(self.backend.name)

    def write(self, records: list[Record]) -> None:
        pending = self.retry + records
        if not self.started and not self._start():
            kept = pending[-MAX_RETRY_RECORDS:]  # kept for when it starts; the store has them anyway
            self._give_up(len(pending) - len(kept), "waiting for it to start")
            self.retry = kept
            return
        failures = self._deliver(pending)
        if self.retry and len(failures) < len(self.retry):
            log.warning("backend %r recovered: wrote records it had missed", self.name)
        self._keep_for_retry(failures)

    def _deliver(self, records: list[Record]) -> list[tuple[Record, BaseException]]:
        """Hand `records` to the backend's hooks, then flush it. A failed flush is an error of the backend,
        not of the records (the hooks took them; writing them again would duplicate them)."""
        try:
            failures = self.backend.deliver(records)
        except BaseException as exc:  # an error outside the per-record hooks: the whole batch is retried
            failures = [(r, exc) for r in records]
        try:
            self.backend.flush()
        except BaseException as exc:
            self._error(exc, "failed to flush")
        if not self.got_hyperparameters:
            failed = {id(r) for r, _ in failures}
            self.got_hyperparameters = any(isinstance(r, Hyperparameters) and id(r) not in failed for r in records)
        return failures

    def _start(self) -> bool:
        """Start the backend, at most once per back-off period (10 s, doubling to 5 min) after a failure."""
        if time.monotonic() < self.next_start:
            return False
        try:
            self.backend.start()
            self.started = True
            return True
        except BaseException as exc:
            self.start_failures += 1
            self.next_start = time.monotonic() + min(300.0, 10.0 * 2 ** (self.start_failures - 1))
            self._error(exc, "could not start", "; its records stay in the local store and it will be tried again")
            return False

    def _error(self, exc: BaseException, what: str, then: str = "") -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self.reported:
            self.reported = True
            log.warning("backend %r %s (%s)%s (reported once; counts are in the run's health)", self.name, what,
                        self.last_error, then)

    def _give_up(self, n: int, why: str) -> None:
        if n <= 0:
            return
        if self.given_up == 0:
            log.warning("backend %r gave up %d record(s) %s (%s); they are in the local store (replay: "
                        "`opusclip-track sync`; later give-ups are counted in the run's health)", self.name, n,
                        why, self.last_error)
        self.given_up += n

    def _keep_for_retry(self, failures: list[tuple[Record, BaseException]]) -> None:
        self.retry = []
        for record, exc in failures:
            self._error(exc, "failed", "; its records stay in the local store and are retried with the next batch")
            tries = self.attempts.get(id(record), 0) + 1
            if tries >= MAX_ATTEMPTS or len(self.retry) >= MAX_RETRY_RECORDS:
                self._give_up(1, f"after {tries} tries")
                self.attempts.pop(id(record), None)
                continue
            self.attempts[id(record)] = tries
            self.retry.append(record)
        live = {id(r) for r in self.retry}
        self.attempts = {k: v for k, v in self.attempts.items() if k in live}

    def close(self, status: RunStatus = "finished") -> None:
        """A last try for what the backend missed, then close it with the run's status. Never raises."""
        if self.started and self.retry:
            failures = self._deliver(self.retry)
            for _, exc in failures:
                self._error(exc, "failed")
            self.retry = [r for r, _ in failures]
        self._give_up(len(self.retry), "still waiting to be retried at close" if self.started
                      else "because it never started")
        self.retry, self.attempts = [], {}
        if not self.started:
            return
        try:
            _close_backend(self.backend, status)
        except BaseException as exc:
            self._error(exc, "failed while closing")


def _close_backend(backend: Backend, status: RunStatus) -> None:
    """`backend.close(status)`; a backend written before `close` took the status is closed without it."""
    try:
        parameters = inspect.signature(backend.close).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a C method): call it the classic way
        parameters = None  # type: ignore[assignment]
    takes_status = parameters is not None and any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)
    if takes_status:
        backend.close(status)
    else:
        backend.close()  # type: ignore[call-arg]


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
        self.writer = StoreWriter(store)
        self.prepare_media = MediaEncoder(media_dir)
        self.bad_records = 0
        self.hyperparameters_sent = 0
        self._bad_reported: set[str] = set()
        self.fanout: Dispatcher[list[Record]] = Dispatcher(self._write_backends, flush_interval_s=flush_interval_s,
                                                           max_bytes=max_bytes, name="opusclip-track-backends")

    def __call__(self, batch: list[Record]) -> None:
        records = self.writer.write(self._resolve(batch))
        if records:
            self.hyperparameters_sent += sum(isinstance(r, Hyperparameters) for r in records)
            self.fanout.put(records, 256 * len(records) + sum(_media_bytes(r) for r in records))

    def _write_backends(self, batches: list[list[Record]]) -> None:
        records = [record for batch in batches for record in batch]
        for slot in self.slots:
            slot.write(records)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the backends' stage has written everything the store has. False on timeout, or when
        some record handed over so far is not in the store (see `health`)."""
        return self.fanout.flush(timeout) and self.all_stored

    @property
    def all_stored(self) -> bool:
        """True while every record handed over so far reached the store."""
        return self.writer.all_stored and self.bad_records == 0

    def health(self, intake: Dispatcher[Record] | None = None) -> dict[str, Any]:
        """What went wrong so far, by stage (all zero/empty in a healthy run); `ok` is False when any record
        is missing from the store or from a backend.

        Args:
            intake: the first stage's dispatcher (callers -> this pipeline), for its worker errors and its
                slowest batch.
        """
        writer = self.writer
        missing = sorted(s.name for s in self.slots if self.hyperparameters_sent and not s.got_hyperparameters)
        counts = {
            "worker_errors": (intake.worker_errors if intake else 0) + self.fanout.worker_errors,
            "bad_records": self.bad_records,
            "media_write_errors": self.prepare_media.write_errors,
            "store_rejected": writer.rejected,
            "store_write_failures": writer.failed_writes,
            "store_pending": len(writer.pending),
            "store_lost": writer.lost,
        }
        lost_somewhere = (any(v for k, v in counts.items() if k != "store_write_failures") or missing
                          or any(s.given_up or s.retry for s in self.slots))
        # Error texts can quote a URL with its password (a tracking server's, say): redacted like the config.
        return redact_secrets({"ok": not lost_somewhere, **counts, "store_last_error": writer.last_error,
                "slowest_batch_s": round(intake.slowest_batch_s, 6) if intake else 0.0,
                "backend_errors": {s.name: s.errors for s in self.slots},
                "backend_gave_up": {s.name: s.given_up for s in self.slots},
                "backend_pending": {s.name: len(s.retry) for s in self.slots},
                "backend_last_error": {s.name: s.last_error for s in self.slots if s.last_error},
                "backends_missing_hparams": missing})

    def close(self, status: RunStatus = "finished") -> None:
        """Drain the backends' stage, give the store a last try for what it holds, then close every backend
        with the run's status. Never raises."""
        self.fanout.close()
        self.writer.close()
        for slot in self.slots:
            slot.close(status)

    def finish(self, meta: dict[str, Any], health: dict[str, Any]) -> None:
        """Record the run's end in its meta (with `health`), log one summary line if anything went wrong,
        and close the store. Never raises: a store that cannot be written any more is reported instead."""
        problems = {k: v for k, v in health.items() if v and k not in ("ok", "store_last_error", "slowest_batch_s",
                                                                       "backend_last_error")
                    and not (isinstance(v, dict) and not any(v.values()))}
        try:
            self.store.set_meta_last({**meta, "health": health})
        except Exception as exc:
            problems["meta"] = f"not written ({type(exc).__name__}: {exc})"
        if problems:
            log.warning("opusclip-track run %s ended %s with problems: %s%s", self.store.path.parent.name,
                        meta.get("status"), ", ".join(f"{k}={v}" for k, v in problems.items()),
                        "" if health["ok"] else " (records are missing somewhere: see the run's meta['health'])")
        try:
            self.store.close()
        except Exception as exc:
            log.warning("opusclip-track: closing the local store %s failed (%s: %s)", self.store.path,
                        type(exc).__name__, exc)

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
    plays in its Images tab). Image and figure: PNG. Table: plain cells, kept as the payload, and JSON on disk.

    A payload that cannot be converted raises (the record is skipped as bad). A file that cannot be written
    (media folder not writable, full disk) does not lose the record: `record.error` says why, its store row
    keeps it, and the backends still get what was encoded in memory. Counted in `write_errors`, reported once.
    """

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir
        self.write_errors = 0
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
            record.encoded["gif"] = media.encode_gif(frames, fps)
            opts.update(frames=int(frames.shape[0]), height=int(frames.shape[1]), width=int(frames.shape[2]))
            self._file(record, "mp4", lambda: media.encode_mp4(frames, self.media_dir / f"{stem}.mp4", fps))
        elif record.kind in ("image", "figure"):
            if record.kind == "figure":
                array = media.render_figure(record.payload, close=record.options.pop("close"))
            else:
                opts = record.options
                array = media.image_to_array(_wait_for_copy(record.payload), layout=opts.pop("layout"),
                                             value_range=opts.pop("value_range"), nrow=opts.pop("nrow"))
            png = media.encode_png(array)
            record.encoded["png"] = png
            record.options.update(height=int(array.shape[0]), width=int(array.shape[1]))
            self._file(record, "png", lambda: _write_atomic(self.media_dir / f"{stem}.png", png))
        elif record.kind == "table":
            columns, rows = record.payload
            rows = [[_plain_cell(v) for v in row] for row in rows]
            record.payload = (columns, rows)
            data = json.dumps({"columns": list(columns), "rows": rows}, default=str).encode()
            self._file(record, "json", lambda: _write_atomic(self.media_dir / f"{stem}.json", data))
        record.payload = None if record.kind != "table" else record.payload  # free the frames early

    def _file(self, record: Media, fmt: str, write: Callable[[], Path]) -> None:
        try:
            record.files[fmt] = write()
        except OSError as exc:
            self.write_errors += 1
            record.error = f"{fmt} file not written: {type(exc).__name__}: {exc}"
            if self.write_errors == 1:
                log.warning("opusclip-track: a %s file could not be written under %s (%s: %s); the record is kept "
                            "in the store with this error (later ones are counted in the run's health)", fmt,
                            self.media_dir, type(exc).__name__, exc)

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


def _plain_cell(value: Any) -> Any:
    """A table cell as plain data: a one-element tensor or a NumPy scalar is its number, arrays are lists."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 and value.dim() == 0 else value.tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
