"""The async hand-off: bounded, from any number of producer threads to one background worker thread.

The run writer (`_writer.py`) uses one per stage: callers -> the store's worker, and the store's worker -> each
backend's own worker.

Concurrency reasoning, in short:

* `put` is the hot path. It appends to a deque and bumps two counters under one uncontended lock (well
  under a microsecond). It never wakes the worker per record: waking a sleeping thread costs 8-18 us of GIL
  hand-over per call, more than everything else on the hot path together. The worker instead wakes on its
  own every `flush_interval_s`, or early when the queued bytes pass a quarter of the memory bound.
* Memory is bounded, nothing is dropped: when the queued bytes exceed `max_bytes`, `put` wakes the worker
  and waits until it has drained below the bound. The time spent waiting is accumulated in
  `backpressure_wait_s` so the tracker can record it.
* `flush` snapshots how many records were queued, wakes the worker and waits until that many were processed,
  so "everything handed over before flush() is written" holds even with several logging threads.
* The worker never dies from one bad batch: `process` is expected to isolate errors itself; anything that
  still escapes (`SystemExit` included) is logged, counted in `worker_errors` and the loop goes on.
* `stop` only asks the worker to finish (it drains what is queued, then runs `on_stop`), so several stages can
  finish at once; `join` waits for it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Dispatcher(Generic[T]):
    """Hands items from any number of producer threads to one worker thread that calls `process(batch)`.

    Args:
        process: called on the worker thread with a list of items, in hand-over order.
        flush_interval_s: the worker's wake-up period. A record is picked up at most this long after it was
            put, so a SIGKILL loses at most the records of the last interval plus the one batch being written.
        max_bytes: memory bound of queued items, as estimated by the `nbytes` passed to `put`.
        name: thread name, for debuggers and `py-spy dump`.
        on_stop: called once on the worker thread after the last batch (closing what the worker wrote to).
    """

    def __init__(self, process: Callable[[list[T]], None], *, flush_interval_s: float, max_bytes: int,
                 name: str = "opusclip-track-worker", on_stop: Callable[[], None] | None = None) -> None:
        self._process = process
        self._on_stop = on_stop
        self._interval = flush_interval_s
        self._max_bytes = max_bytes
        self._wake_bytes = max_bytes // 4
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # notified after each processed batch
        self._wake = threading.Event()
        self._queued = 0  # items ever put
        self._processed = 0  # items ever processed
        self._queued_bytes = 0
        self._sizes: collections.deque[int] = collections.deque()
        self._stopping = False
        self.backpressure_wait_s = 0.0
        self.worker_errors = 0
        self.slowest_batch_s = 0.0  # the longest `process` call: with the interval, what a SIGKILL can lose
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- producer side ---------------------------------------------------------------------------
    def put(self, item: T, nbytes: int = 256) -> float:
        """Queue one item. Blocks only when the memory bound is exceeded (backpressure).

        Returns:
            Seconds spent waiting for room (0.0 unless the queue was over its memory bound).
        """
        with self._lock:
            if self._stopping:
                raise RuntimeError("the tracker is closed: nothing more can be logged")
            self._items.append(item)
            self._sizes.append(nbytes)
            self._queued += 1
            self._queued_bytes += nbytes
            over = self._queued_bytes > self._wake_bytes
        if over:
            self._wake.set()
            if self._queued_bytes > self._max_bytes:
                return self._wait_for_room()
        return 0.0

    def _wait_for_room(self) -> float:
        start = time.perf_counter()
        with self._drained:
            while self._queued_bytes > self._max_bytes and self._thread.is_alive():
                self._wake.set()
                self._drained.wait(timeout=0.05)
            waited = time.perf_counter() - start
            self.backpressure_wait_s += waited
        return waited

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item queued before this call has been processed. Returns False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._drained:
            target = self._queued
            while self._processed < target and self._thread.is_alive():
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._drained.wait(timeout=0.05 if remaining is None else min(0.05, remaining))
        return self._processed >= target

    def wake(self) -> None:
        """Have the worker take what is queued now rather than at its next wake-up."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the worker to process everything queued, run `on_stop` and end; returns at once. Idempotent."""
        with self._lock:
            self._stopping = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the worker has ended (after `stop`)."""
        self._thread.join(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Process everything queued, then stop the worker (`stop` and `join`). Idempotent."""
        self.stop()
        self.join(timeout)

    @property
    def pending(self) -> int:
        return self._queued - self._processed

    # ---- worker side -----------------------------------------------------------------------------
    def _run(self) -> None:
        next_wake = time.monotonic() + self._interval
        while True:
            self._wake.wait(max(0.0, next_wake - time.monotonic()))
            self._wake.clear()
            with self._lock:
                stopping = self._stopping
            self._drain()
            if stopping:
                self._drain()  # a put that raced with close() is still written
                self._finish()
                return
            now = time.monotonic()
            while next_wake <= now:  # the next slot of the fixed schedule (slots missed while writing are skipped:
                next_wake += self._interval  # `_drain` took everything that arrived meanwhile)

    def _finish(self) -> None:
        if self._on_stop is None:
            return
        try:
            self._on_stop()
        except BaseException:  # as for a batch: logged and counted, never raised into the thread's end
            self.worker_errors += 1
            log.exception("opusclip-track worker %s: finishing failed", self._thread.name)

    def _drain(self) -> None:
        while True:
            with self._lock:
                n = len(self._items)
                if n == 0:
                    return
                batch = [self._items.popleft() for _ in range(n)]
                nbytes = sum(self._sizes.popleft() for _ in range(n))
            start = time.perf_counter()
            try:
                self._process(batch)
            except BaseException:  # the worker must survive anything; `process` isolates errors itself
                self.worker_errors += 1
                log.exception("opusclip-track worker: a batch of %d records failed", n)
            self.slowest_batch_s = max(self.slowest_batch_s, time.perf_counter() - start)
            with self._drained:
                self._processed += n
                self._queued_bytes -= nbytes
                self._drained.notify_all()
