"""W&B distributions as Optuna suggestions, and Optuna's stored values back as W&B values.

Optuna samples a raw value per parameter (`_suggest`); `_decode` maps it to the value W&B would give
(quantized, exponentiated, through an inverse CDF, or a JSON-encoded choice decoded).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from .._checks import is_int
from .config import ParameterSpec, SweepConfig, encode_choice

if TYPE_CHECKING:
    import optuna

# Normal, log-normal and beta parameters are sampled as a quantile in [eps, 1 - eps] (Optuna has no
# such distributions) and mapped through the inverse CDF: W&B's semantics, truncated at ~4.75 sigma.
_QUANTILE_EPS = 1e-6


def _is_encoded(values: Sequence[Any]) -> bool:
    return any(encode_choice(v) is not v for v in values)


def _choices(values: Sequence[Any]) -> list[Any]:
    return [encode_choice(v) for v in values]


def _raw_range(spec: ParameterSpec) -> tuple[float, float, bool]:
    """The range Optuna samples for a continuous parameter: (low, high, log)."""
    d, lo, hi = spec.distribution, spec.min, spec.max
    if d in ("uniform", "q_uniform"):
        return float(lo), float(hi), False  # type: ignore[arg-type]
    if d in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"):
        return float(lo), float(hi), True  # type: ignore[arg-type]
    if d in ("log_uniform", "q_log_uniform"):
        return math.exp(lo), math.exp(hi), True  # type: ignore[arg-type]
    if d == "inv_log_uniform":
        return math.exp(-hi), math.exp(-lo), True  # type: ignore[operator]
    return _QUANTILE_EPS, 1.0 - _QUANTILE_EPS, False


def _suggest(trial: optuna.Trial, spec: ParameterSpec, grid: bool) -> Any:
    """Ask Optuna for the raw value of one parameter (`_decode` turns it into the W&B value)."""
    if grid:
        return trial.suggest_categorical(spec.name, _choices(spec.grid_values()))
    if spec.distribution == "categorical" and spec.probabilities is None:
        return trial.suggest_categorical(spec.name, _choices(spec.values))
    if spec.distribution == "categorical":  # weighted: a quantile picks the value (Optuna has no weights)
        return trial.suggest_float(spec.name, 0.0, 1.0)
    if spec.distribution == "int_uniform":
        return trial.suggest_int(spec.name, int(spec.min), int(spec.max))  # type: ignore[arg-type]
    low, high, log = _raw_range(spec)
    return trial.suggest_float(spec.name, low, high, log=log)


def _decode(spec: ParameterSpec, raw: Any, grid: bool) -> Any:
    """The W&B value of a parameter from the raw value Optuna stored."""
    d = spec.distribution
    if grid or d == "categorical":
        values = spec.grid_values() if grid else spec.values
        if d == "categorical" and spec.probabilities is not None and not grid:
            return values[_pick(spec.probabilities, raw)]
        return json.loads(raw) if _is_encoded(values) and isinstance(raw, str) else raw
    if d in ("normal", "q_normal"):
        raw = NormalDist(spec.mu, spec.sigma).inv_cdf(raw)
    elif d in ("log_normal", "q_log_normal"):
        raw = math.exp(NormalDist(spec.mu, spec.sigma).inv_cdf(raw))
    elif d in ("beta", "q_beta"):
        from scipy.stats import beta

        raw = float(beta.ppf(raw, spec.a, spec.b))
    return _quantize(raw, spec.q) if d.startswith("q_") else raw


def _quantize(value: float, q: float) -> float | int:
    """W&B's `round(X / q) * q`; an int `q` gives ints."""
    steps = round(value / q)
    return int(steps * q) if is_int(q) else steps * q


def _pick(probabilities: Sequence[float], u: float) -> int:
    total = 0.0
    for i, p in enumerate(probabilities):
        total += p
        if u < total:
            return i
    return max(i for i, p in enumerate(probabilities) if p > 0)


def sample_params(config: SweepConfig, trial: optuna.Trial) -> dict[str, Any]:
    """Sample one set of parameters for `trial` with W&B semantics (constants included).

    Args:
        config: The sweep config.
        trial: A live Optuna trial (its sampler decides the values).

    Returns:
        Parameter name -> value, in the config's order.
    """
    grid = config.method == "grid"
    params = {}
    for name, spec in config.parameters.items():
        if spec.distribution == "constant":
            params[name] = spec.value
        else:
            params[name] = _decode(spec, _suggest(trial, spec, grid), grid)
    return params


def decode_params(config: SweepConfig, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B values of a finished trial's Optuna params (`FrozenTrial.params`); missing ones are skipped."""
    grid = config.method == "grid"
    out = {}
    for name, spec in config.parameters.items():
        if spec.distribution == "constant":
            out[name] = spec.value
        elif name in raw:
            out[name] = _decode(spec, raw[name], grid)
    return out


def grid_search_space(config: SweepConfig) -> dict[str, list[Any]]:
    """The grid Optuna's GridSampler walks: every swept (non-constant) parameter's encoded grid values."""
    return {n: _choices(s.grid_values()) for n, s in config.parameters.items() if s.distribution != "constant"}

