"""What the worker does with a batch: resolve values, write the store first, then fan out to backends.

Runs on the worker thread only. Every stage isolates failures: a record that cannot be converted is
reported and skipped (the others go on); a record the store rejects for itself is found by bisecting the
batch and skipped alone; a store that cannot be written (full disk, read-only or removed run directory)
holds the records in memory and retries them with every batch while the backends still get them; a
backend that raises (even `SystemExit`) is reported once, retried on later batches, and never stops the
store or the other backends. Every such event is counted in `Pipeline.health`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._backend_stage import BackendSlot
from ._dispatch import Dispatcher
from ._media_encoder import MediaEncoder, encoded_bytes
from .config import redact_secrets
from .records import (
    ConfigUpdate,
    EventRow,
    Histogram,
    Hyperparameters,
    Media,
    Record,
    Rewind,
    RunStatus,
    ScalarRow,
    Scalars,
    record_rows,
)
from .store import RunStore

log = logging.getLogger("opusclip_track")

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
            self.fanout.put(records, 256 * len(records) + sum(encoded_bytes(r) for r in records))

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
