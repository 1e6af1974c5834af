"""`AlertRules`: the value rules of a run, applied on the store's worker to the floats it has resolved."""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opusclip_track.records import Alert, AlertLevel, Record, Scalars

from .settings import alert_settings
from .windows import SpikeWindow, Window

log = logging.getLogger("opusclip_track")

_ROBUST_SIGMA = 1.4826  # MAD x this estimates the standard deviation of normal data
_GPU_MEMORY = re.compile(r"(sys/gpu\d+)/memory_(used|total)_gb")


def _matcher(settings: Mapping[str, Any]) -> Callable[[str], bool]:
    keys = [p.lower() for p in settings["keys"]]
    ignore = [p.lower() for p in settings["ignore"]] if "ignore" in settings else []

    def matches(key: str) -> bool:
        low = key.lower()
        return any(fnmatch.fnmatchcase(low, p) for p in keys) and not any(fnmatch.fnmatchcase(low, p) for p in ignore)
    return matches


_Check = Callable[[str, float, Scalars, Any], "Alert | None"]  # (key, value, record, the check's state)
_Checks = tuple[tuple[_Check, Any], ...]
_Plan = tuple[bool, tuple[tuple[str, _Checks], ...]]  # (the loop's activity?, the watched keys and their checks)


class AlertRules:
    """The rules of one run, applied on the store's worker to each batch of resolved records (`apply`).

    What to do with a record is worked out once per set of keys (which rules watch which key, whether it is the
    loop's activity), so a record of 10 keys no rule watches costs about 0.6 us on the worker (measured; the
    rules off cost the same). A loss value costs an insertion into its window (0.4 us) and a comparison with a floor
    under its spike threshold, refreshed every tenth of a window; the exact median and MAD (4 us for a window of
    100) only for a value above that floor: a record of 10 keys with a loss costs 2 us where computing them for
    every value cost 5 us (a noisy loss) to 7 us (a loss rising every step). A throughput value costs an insertion
    and a median (O(1)).

    Args:
        settings: `TrackingConfig.alerts` (checked again here: a stored config may come from another version).
        run_name: named in the printed line.
    """

    def __init__(self, settings: Mapping[str, Any] | bool | None = None, *, run_name: str = "") -> None:
        self.settings = alert_settings(settings)
        self.run_name = run_name
        self.last_activity = time.time()  # wall time of the last record the caller logged (not `sys/*`, not alerts)
        self.last_step = 0
        self._last_raised: dict[tuple[str, str], float] = {}
        self._checks: dict[str, _Checks] = {}  # every key met so far: its checks, each with its state
        self._plans: dict[tuple[str, ...], _Plan] = {}  # what to do with a record of these keys
        self._gpu_totals: dict[str, float] = {}
        loss_spike, nonfinite = self.settings["loss_spike"], self.settings["nonfinite_loss"]
        throughput = self.settings["throughput_drop"]
        self._is_nonfinite_key = _matcher(nonfinite) if nonfinite else None
        self._is_spike_key = _matcher(loss_spike) if loss_spike else None
        self._is_throughput_key = _matcher(throughput) if throughput else None

    # ---- the worker's entry point ---------------------------------------------------------------------------
    def apply(self, records: Sequence[Record]) -> list[Record]:
        """`records` with the alerts the rules raise from them inserted after the record that raised them, and
        alerts within their cool-down dropped. Prints each alert it lets through."""
        out: list[Record] = []
        for record in records:
            if isinstance(record, Scalars):
                out.append(record)
                self._scalars(record, out)
            elif isinstance(record, Alert):
                if self.admit(record):
                    out.append(record)
            else:
                out.append(record)
                self._active(record.wall_time, getattr(record, "step", None))
        return out

    def admit(self, alert: Alert) -> bool:
        """Whether `alert` is raised (not the same as one raised less than its cool-down ago); prints it if so."""
        same = (alert.rule, alert.key)
        last = self._last_raised.get(same)
        if last is not None and alert.wall_time - last < alert.cooldown_s:
            return False
        self._last_raised[same] = alert.wall_time
        log.log(logging.ERROR if alert.level == "error" else logging.WARNING,
                "opusclip-track alert (%s) %s: %s [run %s, step %d]", alert.level, alert.title, alert.text,
                self.run_name, alert.step)
        return True

    def _active(self, wall_time: float, step: int | None) -> None:
        if wall_time > self.last_activity:
            self.last_activity = wall_time
        if step is not None and step > self.last_step:
            self.last_step = step

    def _scalars(self, record: Scalars, out: list[Record]) -> None:
        values = record.values
        keys = tuple(values)  # a loop logs the same few sets of keys: what to do with one is worked out once
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plan(keys)
        active, watched = plan
        if active:
            self._active(record.wall_time, record.step)
        for key, checks in watched:  # in the record's order, so alerts come in the order logged
            for check, state in checks:
                alert = check(key, values[key], record, state)
                if alert is not None and self.admit(alert):
                    out.append(alert)

    def _plan(self, keys: tuple[str, ...]) -> _Plan:
        """For a record of `keys`: whether it is the loop's activity (not only the system monitor's `sys/*`
        samples), and the keys some rule watches with their checks. A new key's checks are worked out here."""
        for key in keys:
            if key not in self._checks:
                self._checks[key] = self._checks_of(key)
        if len(self._plans) >= 1024:  # key sets that keep changing: start again rather than grow without bound
            self._plans.clear()
        plan = (any(not key.startswith("sys/") for key in keys),
                tuple((key, self._checks[key]) for key in keys if self._checks[key]))
        self._plans[keys] = plan
        return plan

    def _checks_of(self, key: str) -> _Checks:
        """The checks of `key`, each with its state (a window, a GPU's prefix); called as `check(key, value,
        record, state)`: bound methods, no closures, so a value costs one call per rule."""
        found: list[tuple[_Check, Any]] = []
        if self._is_nonfinite_key is not None and self._is_nonfinite_key(key):
            found.append((self._nonfinite, None))
        if self._is_spike_key is not None and self._is_spike_key(key):
            spike = self.settings["loss_spike"]
            found.append((self._spike, SpikeWindow(spike["window"], spike["k"] * _ROBUST_SIGMA)))
        if self._is_throughput_key is not None and self._is_throughput_key(key):
            found.append((self._throughput, Window(self.settings["throughput_drop"]["window"])))
        gpu = _GPU_MEMORY.fullmatch(key) if self.settings["gpu_memory"] else None
        if gpu is not None:
            prefix, which = gpu.groups()
            found.append((self._gpu_memory if which == "used" else self._gpu_total, prefix))
        return tuple(found)


    def _cooling(self, rule: str, key: str, wall_time: float) -> bool:
        """Whether the same alert was raised less than the rule's cool-down ago (checked before any text is made)."""
        last = self._last_raised.get((rule, key))
        return last is not None and wall_time - last < self.settings[rule]["cooldown_s"]

    def _alert(self, rule: str, key: str, record: Scalars, title: str, text: str, level: AlertLevel) -> Alert:
        return Alert.new(title, text, level, record.step, record.wall_time, rule=rule, key=key,
                         cooldown_s=self.settings[rule]["cooldown_s"])

    def _nonfinite(self, key: str, value: float, record: Scalars, _: None) -> Alert | None:
        if math.isfinite(value) or self._cooling("nonfinite_loss", key, record.wall_time):
            return None
        what = "NaN" if math.isnan(value) else "Inf"
        return self._alert("nonfinite_loss", key, record, f"{what} loss: {key}",
                           f"{key} is {value} at step {record.step}", "error")

    def _spike(self, key: str, value: float, record: Scalars, window: SpikeWindow) -> Alert | None:
        if not math.isfinite(value):
            return None
        settings = self.settings["loss_spike"]
        alert = None
        if len(window) >= settings["min_points"] and not window.cannot_spike(value):
            median = window.median()
            if value > median and not self._cooling("loss_spike", key, record.wall_time):
                sigma = _ROBUST_SIGMA * window.mad(median)
                z = (value - median) / sigma if sigma > 0 else math.inf
                if z > settings["k"]:
                    alert = self._alert("loss_spike", key, record, f"Loss spike: {key}",
                                        f"{key} = {value:.4g} at step {record.step} is {z:.1f} robust deviations "
                                        f"above the median {median:.4g} of its last {len(window)} values "
                                        f"(1.4826 x MAD = {sigma:.3g}; alert above k = {settings['k']:g})", "warn")
        window.add(value)
        return alert

    def _throughput(self, key: str, value: float, record: Scalars, window: Window) -> Alert | None:
        if not (math.isfinite(value) and value >= 0):
            return None
        settings = self.settings["throughput_drop"]
        alert = None
        if len(window) >= settings["min_points"]:
            median = window.median()
            if value < settings["fraction"] * median and not self._cooling("throughput_drop", key, record.wall_time):
                alert = self._alert("throughput_drop", key, record, f"Throughput drop: {key}",
                                    f"{key} = {value:.4g} at step {record.step} is {value / median:.0%} of its running "
                                    f"median {median:.4g} over the last {len(window)} values (alert below "
                                    f"{settings['fraction']:.0%})", "warn")
        window.add(value)
        return alert

    def _gpu_total(self, key: str, value: float, record: Scalars, prefix: str) -> None:
        if math.isfinite(value) and value > 0:
            self._gpu_totals[prefix] = value

    def _gpu_memory(self, key: str, used: float, record: Scalars, prefix: str) -> Alert | None:
        total = record.values.get(f"{prefix}/memory_total_gb", self._gpu_totals.get(prefix))
        fraction = self.settings["gpu_memory"]["fraction"]
        if not (total and math.isfinite(total) and total > 0 and used > fraction * total):
            return None
        if self._cooling("gpu_memory", prefix, record.wall_time):
            return None
        gpu = prefix.removeprefix("sys/")
        return self._alert("gpu_memory", prefix, record, f"GPU memory high: {gpu}",
                           f"{gpu} uses {used:.2f} of {total:.2f} GiB ({used / total:.0%}) at step {record.step} "
                           f"(alert above {fraction:.0%}; {prefix}/memory_used_gb)", "warn")


__all__ = ["AlertRules"]
