"""The store stage of the run writer: resolve values, encode media, run the alert rules on the resolved values,
write the local store first, then hand the batch on to the backends' stages.

Runs on the store's worker thread only, and isolates failures: a record that cannot be converted is reported and
skipped (the others go on); a record the store rejects for itself is found by bisecting the batch and skipped
alone; a store that cannot be written (full disk, read-only or removed run directory) holds the records in memory
and retries them with every batch while the backends still get them. Every such event is counted in the run's
health (`RunWriter.health`).
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

from ._media_encoder import MediaEncoder, encoded_bytes
from .alerts import AlertRules
from .records import (
    ConfigUpdate,
    EventRow,
    Histogram,
    Hyperparameters,
    Media,
    Record,
    Rewind,
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


class StoreStage:
    """The store's worker, `process(batch)` of the run writer's first queue: resolve values, encode media, run the
    alert rules (`alerts.AlertRules`: on the floats just resolved, so they never sync the device themselves), write
    the store, then hand what the store took to the backends' stages.

    What was handed over is in SQLite within a flush interval whatever the backends do: they run on threads of
    their own (`_backend_stage.BackendStage`).

    Args:
        store: the run's local store (written first, always).
        media_dir: where encoded clips, images and tables are kept (`<run_dir>/media`).
        hand_over: called with each batch the store took and its estimated size in bytes (the backends' stages).
        alerts: the run's alert rules; None: the defaults.
    """

    def __init__(self, store: RunStore, media_dir: Path, hand_over: Callable[[list[Record], int], None],
                 alerts: AlertRules | None = None) -> None:
        self.store = store
        self.writer = StoreWriter(store)
        self.prepare_media = MediaEncoder(media_dir)
        self.alerts = alerts if alerts is not None else AlertRules(run_name=store.path.parent.name)
        self.bad_records = 0
        self.hyperparameters_sent = 0
        self._hand_over = hand_over
        self._bad_reported: set[str] = set()

    def __call__(self, batch: list[Record]) -> None:
        records = self.writer.write(self._check_alerts(self._resolve(batch)))
        if records:
            self.hyperparameters_sent += sum(isinstance(r, Hyperparameters) for r in records)
            self._hand_over(records, 256 * len(records) + sum(encoded_bytes(r) for r in records))

    @property
    def all_stored(self) -> bool:
        """True while every record handed over so far reached the store."""
        return self.writer.all_stored and self.bad_records == 0

    def counts(self) -> dict[str, int]:
        """What this stage missed so far (all zero in a healthy run): see `RunWriter.health`."""
        writer = self.writer
        return {"bad_records": self.bad_records, "media_write_errors": self.prepare_media.write_errors,
                "store_rejected": writer.rejected, "store_write_failures": writer.failed_writes,
                "store_pending": len(writer.pending), "store_lost": writer.lost}

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

    def _check_alerts(self, records: list[Record]) -> list[Record]:
        """The batch with the alerts the rules raise; a rule that fails is reported once and the batch goes on."""
        try:
            return self.alerts.apply(records)
        except Exception as exc:
            if "alerts" not in self._bad_reported:
                self._bad_reported.add("alerts")
                log.error("opusclip-track worker: the alert rules failed on a batch (%s: %s); its records are "
                          "written without them (reported once)", type(exc).__name__, exc)
            return records

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
