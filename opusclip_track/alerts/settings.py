"""The alert rules and their settings: `DEFAULT_RULES`, and `alert_settings` that checks `TrackingConfig.alerts`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast, get_args

from opusclip_track._checks import argument_error, is_int, is_number
from opusclip_track.records import AlertLevel

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
"""Every rule and its default settings (see the package docstring)."""

# name -> (low, high, low allowed): the range of each number setting
_RANGES: dict[str, tuple[float, float, bool]] = {
    "k": (0.0, 1e6, False), "fraction": (0.0, 1.0, False), "minutes": (0.0, 1440.0, False),
    "cooldown_s": (0.0, 86_400.0, True), "window": (3, 1_000_000, True), "min_points": (3, 1_000_000, True)}


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
    value = _known_keys(name, value, DEFAULT_RULES, "rule -> settings", "rule")
    out: dict[str, Any] = {}
    for rule, defaults in DEFAULT_RULES.items():
        given = value.get(rule, True)
        if given is False:
            out[rule] = False
            continue
        out[rule] = _rule_settings(f"{name}.{rule}", {} if given is True or given is None else given, defaults)
    return out


def _known_keys(name: str, value: Any, known: Mapping[str, Any], expected: str, noun: str) -> Mapping[str, Any]:
    """`value`, a mapping whose keys are all in `known`; else a TypeError or ValueError naming `name`."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected true, false or a dict of {expected}, received {type(value).__name__} "
                        f"{value!r}")
    unknown = sorted(str(k) for k in set(value) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown {noun}(s) {unknown}; expected some of {sorted(known)}")
    return value


def _rule_settings(name: str, given: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    given = _known_keys(name, given, defaults, f"settings ({', '.join(defaults)})", "setting")
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


__all__ = ["DEFAULT_RULES", "alert_settings", "check_level"]
