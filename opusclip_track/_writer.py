"""The run writer: one object owns a run's whole write path, so the tracker (its facade) never sequences stages.

    callers --put--> [queue] --> store stage (one thread: resolve values, encode media, write SQLite)
                                      |--> [queue] --> TensorBoard stage (its own thread)
                                      |--> [queue] --> W&B stage (its own thread)
                                      '--> [queue] --> MLflow stage (its own thread) ...

`put` is the hot path (`_dispatch.Dispatcher.put`: a deque append, no wake-up); `flush` waits for every stage;
`close` drains them in order and closes the store last; `health` counts what each stage missed. The alert rules
run in the store stage (`alerts.AlertRules`); the `stalled` rule's watchdog (`alerts.Watchdog`) is the writer's
own timer thread, which hands its alert in through `put` like any record. Like
TensorBoard's `EventFileWriter` owning its `_AsyncWriter`, callers see one writer, not its threads.

On a non-zero rank the tracker gets a `NullWriter` once: it takes everything and writes nothing, because only
global rank 0 writes (see `distributed.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._backend_stage import BackendStage
from ._dispatch import Dispatcher
from ._pipeline import StoreStage
from .alerts import AlertRules, Watchdog
from .backends import Backend
from .config import redact_secrets
from .records import Record, RunStatus
from .store import RunStore, health_problems

log = logging.getLogger("opusclip_track")


class RunWriter:
    """Writes one run: the local store first, then every backend, each on a thread of its own.

    Args:
        store: the run's store, opened for writing; the writer closes it.
        backends: the enabled backends, not started yet (each starts on its own thread).
        media_dir: where encoded clips, images and tables are kept (`<run_dir>/media`).
        flush_interval_s: every stage's wake-up period: a record is in the store at most this long after it was
            put (plus the batch being written), and in a backend at most this long after that.
        max_bytes: the memory bound of every stage's queue (see `BackendStage` for why the stages together stay
            within it).
        alerts: the alert rules' settings (`TrackingConfig.alerts`: one entry per rule, or False for none).
    """

    def __init__(self, store: RunStore, backends: Sequence[Backend], media_dir: Path, *, flush_interval_s: float,
                 max_bytes: int, alerts: Mapping[str, Any] | bool) -> None:
        self.store = store
        self.stages = [BackendStage(b, flush_interval_s=flush_interval_s, max_bytes=max_bytes) for b in backends]
        rules = AlertRules(alerts, run_name=store.path.parent.name)
        self.store_stage = StoreStage(store, media_dir, self._to_backends, rules)
        self._intake: Dispatcher[Record] = Dispatcher(self.store_stage, flush_interval_s=flush_interval_s,
                                                      max_bytes=max_bytes, name="opusclip-track-store")
        self._watchdog = Watchdog(rules, lambda alert: self._intake.put(alert, 1024),
                                  drain=lambda: self._intake.flush(timeout=10.0)).start()

    # ---- the caller's side ---------------------------------------------------------------------------------
    def put(self, record: Record, nbytes: int) -> float:
        """Hand a record over (microseconds). Returns the seconds spent waiting for room (0.0 unless the queue
        was over its memory bound). Raises RuntimeError once the writer is closed."""
        return self._intake.put(record, nbytes)

    @property
    def backpressure_wait_s(self) -> float:
        """Seconds callers have waited for room in total."""
        return self._intake.backpressure_wait_s

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything put before this call is in the store and has been through every backend.

        Returns:
            False on timeout, or when some record put so far is not in the store (`health` says why); the
            backends' own failures are counted in `health` and do not make it False.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._intake.flush(timeout):  # into the store, and so queued for every backend ...
            return False
        for stage in self.stages:  # ... every backend at once, then wait for each
            stage.wake()
        for stage in self.stages:
            if not stage.flush(None if deadline is None else max(0.0, deadline - time.monotonic())):
                return False
        return self.store_stage.all_stored

    def close(self, status: RunStatus, error: str | None) -> None:
        """Write everything, close every backend with `status` (in parallel, each on its own thread), record the
        run's end and health in the store's meta, close the store. Never raises for what the stages do.

        Args:
            status: how the run ended, for the meta and every backend's `close`.
            error: the error a failed run died of (`"TypeName: message"`); None clears an earlier one.
        """
        self._watchdog.stop()  # before the intake closes: its last alert, if any, is still written
        self._intake.close()  # everything into the store and queued for the backends
        self.store_stage.writer.close()  # a last try for records the store held back
        for stage in self.stages:
            stage.stop(status)
        for stage in self.stages:
            stage.join()
        health = self.health
        meta = {"status": status, "finished_at": time.time(), "backend_errors": health["backend_errors"],
                "backend_gave_up": health["backend_gave_up"], "backpressure_wait_s": self.backpressure_wait_s,
                "error": error}  # None for a finished run (also clears a resumed run's earlier error)
        self._finish_store(meta, health)

    def abandon_after_fork(self) -> None:
        """In a forked child: let go of the store without closing it (the parent still writes it)."""
        self.store.forget_after_fork()

    # ---- what went wrong ------------------------------------------------------------------------------------
    @property
    def backend_errors(self) -> dict[str, int]:
        """Errors raised by each backend so far."""
        return {stage.name: stage.slot.errors for stage in self.stages}

    @property
    def health(self) -> dict[str, Any]:
        """What went wrong so far, by stage (all zero/empty in a healthy run); `ok` is False when any record is
        missing from the store or from a backend. The keys are documented on `AdvancedExperimentTracker.health`."""
        slots = [stage.slot for stage in self.stages]
        sent = self.store_stage.hyperparameters_sent
        missing = sorted(s.name for s in slots if sent and not s.got_hyperparameters)
        counts = {"worker_errors": self._intake.worker_errors + sum(stage.worker_errors for stage in self.stages),
                  **self.store_stage.counts()}
        lost_somewhere = (any(v for k, v in counts.items() if k != "store_write_failures") or missing
                          or any(s.given_up or s.retry for s in slots))
        # Error texts can quote a URL with its password (a tracking server's, say): redacted like the config.
        return redact_secrets({
            "ok": not lost_somewhere, **counts, "store_last_error": self.store_stage.writer.last_error,
            "slowest_batch_s": round(self._intake.slowest_batch_s, 6),
            "backend_errors": {s.name: s.errors for s in slots},
            "backend_gave_up": {s.name: s.given_up for s in slots},
            "backend_pending": {s.name: len(s.retry) for s in slots},
            "backend_last_error": {s.name: s.last_error for s in slots if s.last_error},
            "backends_missing_hparams": missing})

    # ---- inside ------------------------------------------------------------------------------------------------
    def _to_backends(self, records: list[Record], nbytes: int) -> None:
        for stage in self.stages:
            stage.put(records, nbytes)

    def _finish_store(self, meta: dict[str, Any], health: dict[str, Any]) -> None:
        """Record the run's end in its meta (with `health`), log one summary line if anything went wrong, and
        close the store. Never raises: a store that cannot be written any more is reported instead."""
        problems = health_problems(health)
        try:
            self.store.set_meta_last({**meta, "health": health})
        except Exception as exc:
            problems.append(f"meta=not written ({type(exc).__name__}: {exc})")
        if problems:
            log.warning("opusclip-track run %s ended %s with problems: %s%s", self.store.path.parent.name,
                        meta.get("status"), ", ".join(problems),
                        "" if health["ok"] else " (records are missing somewhere: see the run's meta['health'])")
        try:
            self.store.close()
        except Exception as exc:
            log.warning("opusclip-track: closing the local store %s failed (%s: %s)", self.store.path,
                        type(exc).__name__, exc)


class NullWriter:
    """The writer on a non-zero rank: takes everything, writes nothing, reports nothing (`health` is empty)."""

    backpressure_wait_s = 0.0

    def put(self, record: Record, nbytes: int) -> float:
        return 0.0

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, status: RunStatus, error: str | None) -> None:
        pass

    def abandon_after_fork(self) -> None:
        pass

    @property
    def backend_errors(self) -> dict[str, int]:
        return {}

    @property
    def health(self) -> dict[str, Any]:
        return {}
