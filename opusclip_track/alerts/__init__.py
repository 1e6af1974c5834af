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

Modules: `settings` (the rules and their settings, checked for `TrackingConfig.alerts`), `rules` (`AlertRules`,
on the store's worker), `windows` (the sorted windows of the loss-spike and throughput rules), `watchdog` (the
`stalled` rule's timer thread). The package imports neither torch nor NumPy: the configuration (`config.py`)
validates its settings here.
"""

from __future__ import annotations

from .rules import AlertRules
from .settings import DEFAULT_RULES, alert_settings, check_level
from .watchdog import Watchdog

__all__ = ["DEFAULT_RULES", "AlertRules", "Watchdog", "alert_settings", "check_level"]
