"""One backend's share of the run writer: its own thread and queue (`BackendStage`) and its failure
bookkeeping (`BackendSlot`: retries, give-ups, a start that backs off).

Every call into the backend is guarded against any exception, `SystemExit` and `KeyboardInterrupt` included, so a
backend never stops the thread that calls it; what a backend missed stays in the local store (`opusclip-track sync`).
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field

from ._dispatch import Dispatcher
from .backends import Backend
from .records import Hyperparameters, Record, RunStatus

log = logging.getLogger("opusclip_track")

MAX_ATTEMPTS = 5  # tries of one record by one backend before that backend gives it up
MAX_RETRY_RECORDS = 100_000  # per backend; beyond this, the store alone keeps them (replay: `opusclip-track sync`)


@dataclass
class BackendSlot:
    """A backend plus its failure bookkeeping.

    Records a backend fails on are kept and retried with the next batches (a service that was down comes
    back); a record that still fails after `MAX_ATTEMPTS` tries is given up by this backend (it stays in the
    local store, for `opusclip-track sync`). The first error is reported once, not once per record. Every
    call into the backend is guarded against any exception, `SystemExit` and `KeyboardInterrupt` included
    (a backend must not stop its thread). `given_up` counts exactly the records this backend never
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


class BackendStage:
    """One backend on a thread of its own, behind a bounded queue of its own, after the store.

    A backend that stalls (an MLflow server that takes its 30 s HTTP timeout, W&B starting) delays only its own
    records: the store and every other backend go on. Memory stays bounded: each stage holds at most `max_bytes`
    of records, and since every stage receives the same records in the same order the stages' queues overlap,
    so together they hold what the slowest one holds. A stage whose queue is full holds back the store's worker
    until it has room (backpressure; nothing is dropped), which in turn holds back the callers.

    The backend starts on this thread (a slow start delays nobody else) and is closed on it too, so backends
    finish in parallel at the end of the run.

    Args:
        backend: the backend, not started yet.
        flush_interval_s: the stage's wake-up period (records reach the backend at most this long after the
            store has them, unless a flush wakes it sooner).
        max_bytes: the stage's memory bound, as estimated by `put`'s `nbytes`.
    """

    def __init__(self, backend: Backend, *, flush_interval_s: float, max_bytes: int) -> None:
        self.slot = BackendSlot(backend)
        self._status: RunStatus = "finished"
        self._queue: Dispatcher[list[Record]] = Dispatcher(
            self._write, flush_interval_s=flush_interval_s, max_bytes=max_bytes,
            name=f"opusclip-track-{self.slot.name}", on_stop=self._close)

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def worker_errors(self) -> int:
        """Errors that escaped the slot's own guards (none are expected)."""
        return self._queue.worker_errors

    def put(self, records: list[Record], nbytes: int) -> None:
        """Queue a batch the store has taken; blocks only while this stage is over its memory bound."""
        self._queue.put(records, nbytes)

    def wake(self) -> None:
        self._queue.wake()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the backend has been handed every batch queued before this call. False on timeout."""
        return self._queue.flush(timeout)

    def stop(self, status: RunStatus) -> None:
        """Write what is queued, then close the backend with `status`, on the stage's thread; returns at once."""
        self._status = status
        self._queue.stop()

    def join(self) -> None:
        """Wait until the stage has written everything and closed its backend."""
        self._queue.join()

    def _write(self, batches: list[list[Record]]) -> None:
        self.slot.write([record for batch in batches for record in batch])

    def _close(self) -> None:
        self.slot.close(self._status)
