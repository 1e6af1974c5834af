"""The `stalled` rule: a timer thread that raises an alert when a run has logged nothing for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from opusclip_track.records import Alert

from .rules import AlertRules


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class Watchdog:
    """Raises the `stalled` alert when the caller has logged nothing for the rule's `minutes`.

    A daemon thread wakes every quarter of that time (at most every 30 s) and compares the clock with the last
    activity the rules saw on the worker (`AlertRules.last_activity`); the hot path does nothing for it. Before it
    calls a silence, it has the worker take what is queued (`drain`), since records wait up to `flush_interval_s`
    for the worker. One alert per silence: it fires again only after something was logged and a new silence began.

    Args:
        rules: the run's rules (their `stalled` settings, and the activity the worker records in them).
        raise_alert: hands an alert to the run writer (the store's worker then prints, stores and sends it).
        drain: waits until the worker has taken every record handed over so far.
    """

    def __init__(self, rules: AlertRules, raise_alert: Callable[[Alert], object],
                 drain: Callable[[], object] = lambda: None) -> None:
        self._rules = rules
        self._raise = raise_alert
        self._drain = drain
        settings = rules.settings["stalled"]
        self.after_s: float | None = settings["minutes"] * 60.0 if settings else None
        self._fired_for: float | None = None  # the activity time of the silence already reported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        """Start the timer thread (nothing when the rule is off)."""
        if self.after_s is not None:
            self._thread = threading.Thread(target=self._run, name="opusclip-track-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the timer thread and wait for it. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        assert self.after_s is not None
        period = min(max(self.after_s / 4, 0.01), 30.0)
        while not self._stop.wait(period):
            self.check()

    def check(self) -> None:
        """Raise the alert if nothing was logged for `after_s` and this silence was not reported yet."""
        if self._silence(time.time()) is None:
            return
        self._drain()
        now = time.time()
        last = self._silence(now)
        if last is None or self._stop.is_set():
            return
        self._fired_for = last
        settings = self._rules.settings["stalled"]
        step = self._rules.last_step
        text = (f"nothing was logged for {_duration(now - last)} (since step {step} at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))}) while the process is alive: a hung data "
                f"loader, a deadlock or a stuck collective? (alert after {settings['minutes']:g} min)")
        alert = Alert.new(f"Stalled: nothing logged for {settings['minutes']:g} min", text, "warn", step, now,
                          rule="stalled", key="", cooldown_s=settings["cooldown_s"])
        try:
            self._raise(alert)
        except RuntimeError:  # the run is closing: nothing more can be logged
            self._stop.set()

    def _silence(self, now: float) -> float | None:
        """The time of the last activity when it is `after_s` old and not reported yet, else None."""
        last = self._rules.last_activity
        if self.after_s is None or now - last < self.after_s or self._fired_for == last:
            return None
        return last


__all__ = ["Watchdog"]
