"""Alerts: rules that watch what a run logs (on the store's worker), and a watchdog for a run gone quiet.

An alert (`records.Alert`: a title, a text and a level, `info`, `warn` or `error`) is a record like any other:
printed once (the `opusclip_track` logger: `error` as ERROR, the others as WARNING), stored first (store event
kind `"alert"`, which the HTML report shows on top and `opusclip-track runs show` lists), then sent to every
backend: W&B (`run.alert`; an offline run records it in its `.wandb` file and `wandb sync` sends it), MLflow (a tag
per title and the text as an artifact under `alerts/`), TensorBoard (a text entry under `alerts/`, in the Text tab).
`opusclip-track sync` replays them. `tracker.alert(title, text, level)` raises one by hand; the rules below raise
them from the run's own values.

The rules run on the store's worker, on the floats it has already resolved (one device transfer per batch, which
the worker makes anyway), so neither the caller's thread nor the device ever waits for them. Their settings are
`TrackingConfig.alerts`, one entry per rule; every rule is on by default, `False` turns one off, a dict changes
its settings, and `alerts=False` turns them all off:

    nonfinite_loss   (error) a loss-like key (matching one of `keys` and none of `ignore`) is NaN or +-inf
    loss_spike       (warn)  a loss-like value is more than `k` robust deviations (1.4826 x the MAD) above the
                             median of its last `window` finite values (once it has `min_points` of them)
    throughput_drop  (warn)  a throughput key (`perf/*_per_s`: `system.ThroughputMeter`'s samples and frames per
                             second) is below `fraction` of its running median (last `window` values)
    gpu_memory       (warn)  a GPU's `sys/gpu<i>/memory_used_gb` is above `fraction` of its `memory_total_gb` (the
                             system monitor's NVML readings: whatever GPUs it reports)
    stalled          (warn)  nothing was logged for `minutes` while the process lives (the system monitor's own
                             `sys/*` samples do not count): a timer thread checks, the hot path does nothing

Rate limit: an alert is *the same* as an earlier one when it has the same rule and the same key: the metric key
(`train/loss`), `sys/gpu<i>` for GPU memory, the title for `tracker.alert`. The same alert less than its cool-down
after the last one raised (`cooldown_s` of its rule, default 10 minutes; `wait_s` of `tracker.alert`, default 60 s
like W&B's `wait_duration`) is dropped: not printed, stored or sent. `stalled` fires once per silence.

This module imports neither torch nor NumPy: the configuration (`config.py`) validates its settings here.
"""

from __future__ import annotations

import bisect
import collections
import fnmatch
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast, get_args

from ._checks import argument_error, is_int, is_number
from .records import Alert, AlertLevel, Record, Scalars

__all__ = ["DEFAULT_RULES", "AlertRules", "Watchdog", "alert_settings", "check_level"]

log = logging.getLogger("opusclip_track")

_COOLDOWN_S = 600.0
_LOSS_KEYS = {"keys": ["*loss*"], "ignore": ["*loss_scale*"]}  # AMP's loss scale doubles and halves by design
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "nonfinite_loss": {**_LOSS_KEYS, "cooldown_s": _COOLDOWN_S},
    "loss_spike": {**_LOSS_KEYS, "k": 10.0, "window": 100, "min_points": 20, "cooldown_s": _COOLDOWN_S},
    "throughput_drop": {"keys": ["perf/*_per_s"], "fraction": 0.5, "window": 100, "min_points": 10,
                        "cooldown_s": _COOLDOWN_S},
    "gpu_memory": {"fraction": 0.95, "cooldown_s": _COOLDOWN_S},
    "stalled": {"minutes": 30.0, "cooldown_s": _COOLDOWN_S},
}
"""Every rule and its default settings (see the module docstring)."""

# name -> (low, high, low allowed): the range of each number setting
_RANGES: dict[str, tuple[float, float, bool]] = {
    "k": (0.0, 1e6, False), "fraction": (0.0, 1.0, False), "minutes": (0.0, 1440.0, False),
    "cooldown_s": (0.0, 86_400.0, True), "window": (3, 1_000_000, True), "min_points": (3, 1_000_000, True)}
_ROBUST_SIGMA = 1.4826  # MAD x this estimates the standard deviation of normal data
_GPU_MEMORY = re.compile(r"(sys/gpu\d+)/memory_(used|total)_gb")


# ---- settings ---------------------------------------------------------------------------------------------------
def alert_settings(value: Mapping[str, Any] | bool | None, name: str = "TrackingConfig.alerts") -> dict[str, Any]:
    """Every rule's settings with its defaults filled in, or False for a rule that is off.

    Args:
        value: True or None (every rule with its defaults), False (every rule off), or a dict of rule name ->
            True (defaults), False (off) or a dict of settings that replace the defaults (`{"k": 6}`).
        name: how errors name the setting.

    Raises:
        ValueError: an unknown rule or setting (naming it and what is known), a number out of its range.
        TypeError: a setting of the wrong type.

    Example:
        >>> alert_settings({"loss_spike": {"k": 6}, "gpu_memory": False})["loss_spike"]["k"]
        6.0
    """
    if value is None or value is True:
        value = {}
    elif value is False:
        return dict.fromkeys(DEFAULT_RULES, False)
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected true, false or a dict of rule -> settings, received "
                        f"{type(value).__name__} {value!r}")
    unknown = sorted(str(rule) for rule in set(value) - set(DEFAULT_RULES))
    if unknown:
        raise ValueError(f"{name}: unknown rule(s) {unknown}; expected some of {sorted(DEFAULT_RULES)}")
    out: dict[str, Any] = {}
    for rule, defaults in DEFAULT_RULES.items():
        given = value.get(rule, True)
        if given is False:
            out[rule] = False
            continue
        out[rule] = _rule_settings(f"{name}.{rule}", {} if given is True or given is None else given, defaults)
    return out


def _rule_settings(name: str, given: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise TypeError(f"{name}: expected true, false or a dict of settings ({', '.join(defaults)}), received "
                        f"{type(given).__name__} {given!r}")
    unknown = sorted(str(k) for k in set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{name}: unknown setting(s) {unknown}; expected some of {sorted(defaults)}")
    settings = {key: _setting(f"{name}.{key}", given.get(key, default), default) for key, default in defaults.items()}
    if "window" in settings and settings["min_points"] > settings["window"]:
        raise argument_error(f"{name}.min_points", f"at most window ({settings['window']})", settings["min_points"])
    return settings


def _setting(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in value):
            raise TypeError(f"{name}: expected a list of key patterns such as ['*loss*'], received "
                            f"{type(value).__name__} {value!r}")
        return list(value)
    low, high, low_allowed = _RANGES[name.rsplit(".", 1)[1]]
    kind = "an int" if is_int(default) else "a number"
    if not (is_int(value) if is_int(default) else is_number(value, finite=True)):
        raise TypeError(f"{name}: expected {kind}, received {type(value).__name__} {value!r}")
    if not ((low <= value) if low_allowed else (low < value)) or value > high:
        raise argument_error(name, f"{kind} in {'[' if low_allowed else '('}{low:g}, {high:g}]", value)
    return value if is_int(default) else float(value)


def check_level(level: Any) -> AlertLevel:
    """`level` as stored: `"info"`, `"warn"` or `"error"` (W&B's `INFO`, `WARN`, `ERROR` are taken too)."""
    levels = get_args(AlertLevel)
    text = level.lower() if isinstance(level, str) else level
    if text not in levels:
        raise argument_error("level", f"one of {', '.join(levels)}", level)
    return cast(AlertLevel, text)


# ---- the rules ---------------------------------------------------------------------------------------------------
class _Window:
    """The last `size` values, also kept sorted: the median costs O(1), an append a memmove."""

    __slots__ = ("size", "values", "ordered", "added")

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: collections.deque[float] = collections.deque()
        self.ordered: list[float] = []
        self.added = 0  # values added since `_SpikeWindow` last bounded its threshold

    def __len__(self) -> int:
        return len(self.values)

    def add(self, value: float) -> None:
        if len(self.values) == self.size:
            del self.ordered[bisect.bisect_left(self.ordered, self.values.popleft())]
        self.values.append(value)
        bisect.insort(self.ordered, value)
        self.added += 1

    def median(self) -> float:
        return _median(self.ordered)

    def mad(self, median: float) -> float:
        """The median absolute deviation from `median` (4 us for 100 values, measured)."""
        return _median(_distances(self.ordered, median, median))


class _SpikeWindow(_Window):
    """A loss key's window and a floor under its alert threshold (median + k x 1.4826 x MAD) that holds while at
    most `slack` more values are added: a value at or below the floor cannot be a spike, so the exact median and
    MAD are computed only for a value above it. The floor costs about a MAD and is worked out again every `slack`
    values (a tenth of the window), so a loss value costs about 1 us instead of 4 to 10.

    Why it holds: after at most r values are added (and as many of the oldest dropped), each order statistic of
    the window moves by at most r ranks, so the median lies in [low, high], the window's order statistics r ranks
    below and above its median now. A value kept is then at least its distance to [low, high] from the median, and
    an added value at least 0 from it, so the MAD is at least the order statistic r ranks below the middle of those
    distances, and the threshold at least `low` plus `scale` times that.
    """

    __slots__ = ("scale", "floor", "slack")

    def __init__(self, size: int, scale: float) -> None:
        super().__init__(size)
        self.scale = scale  # k x 1.4826
        self.floor = -math.inf
        self.slack = -1  # how many added values the floor holds for; none yet

    def cannot_spike(self, value: float) -> bool:
        """Whether `value` is at or below the threshold of every window reachable before the next refresh."""
        if self.added > self.slack:
            self.slack, self.added = max(1, len(self.ordered) // 10), 0
            self.floor = self._threshold_floor()
        return value <= self.floor

    def _threshold_floor(self) -> float:
        ordered, slack = self.ordered, self.slack
        n = len(ordered)
        rank = (n + 1) // 2 - slack  # 1-based: the lower median's, `slack` ranks down
        if rank < 1:
            return -math.inf
        low = ordered[rank - 1]
        high = ordered[n // 2 + slack] if n // 2 + slack < n else math.inf
        floor = low + self.scale * _distances(ordered, low, high)[rank - 1]
        return floor - 1e-12 * (abs(low) + abs(floor))  # the exact test's rounding cannot cross it


def _distances(ordered: list[float], low: float, high: float) -> list[float]:
    """Each of the sorted `ordered` values' distance to [low, high], sorted. The distances below `low` and above
    `high` are two sorted runs, which `sorted` merges in linear time (one plain sort took 1.5x as long)."""
    start, stop = bisect.bisect_left(ordered, low), bisect.bisect_right(ordered, high)
    inside = [0.0] * (stop - start)
    return sorted(inside + [low - v for v in reversed(ordered[:start])] + [v - high for v in ordered[stop:]])


def _median(ordered: Sequence[float]) -> float:
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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
            found.append((self._spike, _SpikeWindow(spike["window"], spike["k"] * _ROBUST_SIGMA)))
        if self._is_throughput_key is not None and self._is_throughput_key(key):
            found.append((self._throughput, _Window(self.settings["throughput_drop"]["window"])))
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

    def _spike(self, key: str, value: float, record: Scalars, window: _SpikeWindow) -> Alert | None:
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

    def _throughput(self, key: str, value: float, record: Scalars, window: _Window) -> Alert | None:
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

def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ---- the watchdog -------------------------------------------------------------------------------------------------
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
