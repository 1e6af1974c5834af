"""Hyperparameter sweeps: a W&B sweep config, run locally by Optuna or on the W&B sweep server.

The config is the W&B sweep schema (`method`, `metric`, `parameters`, `early_terminate`, `run_cap`, ...), so
one YAML file drives both engines:

- `run_sweep` (local, no account): Optuna. `grid` -> `GridSampler`, `random` -> `RandomSampler(seed)`,
  `bayes` -> `TPESampler(seed)`, hyperband -> `HyperbandPruner`. The study lives in an SQLite file
  (`runs/sweeps/<name>.db`) or any SQLAlchemy URL (`postgresql://...`), so an interrupted sweep resumes,
  `workers=N` processes share it on one machine, and machines share it through a database server.
- `run_wandb_sweep` (online): `wandb.sweep` + `wandb.agent` with the config passed through unchanged.

Every trial is a tracked run (`AdvancedExperimentTracker`, grouped by sweep name) whose hyperparameters and
final metric land in TensorBoard's HParams dashboard and W&B.

Example:
    >>> def objective(params, trial):
    ...     for step in range(1, 4):
    ...         trial.report((params["lr"] - 0.01) ** 2 / step, step)
    ...     return (params["lr"] - 0.01) ** 2
    >>> cfg = SweepConfig.from_dict({"name": "demo", "method": "grid", "metric": {"name": "loss"},
    ...                              "parameters": {"lr": {"values": [0.001, 0.01]}}})
    >>> result = run_sweep(cfg, objective, root=tmp_dir, track=False, plot=False)  # doctest: +SKIP
    >>> result.best_params  # doctest: +SKIP
    {'lr': 0.01}
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, get_args

from .config import _slug, redact_secrets

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

Method = Literal["grid", "random", "bayes"]
Goal = Literal["minimize", "maximize"]
TrialStateName = Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
Distribution = Literal[
    "constant", "categorical", "int_uniform", "uniform", "q_uniform",
    "log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values",
    "inv_log_uniform", "inv_log_uniform_values",
    "normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta",
]

# distribution -> (required keys, optional keys); W&B's schema forbids any other key on a parameter.
_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "constant": (frozenset({"value"}), frozenset()),
    "categorical": (frozenset({"values"}), frozenset({"probabilities"})),
    "int_uniform": (frozenset({"min", "max"}), frozenset()),
    **{d: (frozenset({"min", "max"}), frozenset()) for d in (
        "uniform", "log_uniform", "log_uniform_values", "inv_log_uniform", "inv_log_uniform_values")},
    **{d: (frozenset({"min", "max"}), frozenset({"q"})) for d in (
        "q_uniform", "q_log_uniform", "q_log_uniform_values")},
    "normal": (frozenset(), frozenset({"mu", "sigma"})),
    "log_normal": (frozenset(), frozenset({"mu", "sigma"})),
    "q_normal": (frozenset(), frozenset({"mu", "sigma", "q"})),
    "q_log_normal": (frozenset(), frozenset({"mu", "sigma", "q"})),
    "beta": (frozenset(), frozenset({"a", "b"})),
    "q_beta": (frozenset(), frozenset({"a", "b", "q"})),
}
_POSITIVE_MIN = frozenset({"log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"})
_GRID_OK = frozenset({"constant", "categorical", "int_uniform", "q_uniform"})
# W&B keys the local engine accepts and leaves alone (they concern the W&B agent or UI).
_IGNORED_KEYS = frozenset({"program", "command", "description", "entity", "project", "controller",
                           "apiVersion", "kind", "job", "image_uri"})
_TOP_KEYS = frozenset({"method", "metric", "parameters", "early_terminate", "run_cap", "name"}) | _IGNORED_KEYS
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_MAX_GRID = 100_000
# Normal, log-normal and beta parameters are sampled as a quantile in [eps, 1 - eps] (Optuna has no
# such distributions) and mapped through the inverse CDF: W&B's semantics, truncated at ~4.75 sigma.
_QUANTILE_EPS = 1e-6
_DEFAULT_METRIC = "objective"


def _error(path: str, expected: str, received: Any) -> ValueError:
    return ValueError(f"{path}: expected {expected}, received {received!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- the config ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParameterSpec:
    """One swept parameter, with its distribution resolved as W&B resolves it.

    `log_uniform`, `q_log_uniform` and `inv_log_uniform` take `min`/`max` as exponents of e; the `*_values`
    forms take the values themselves. `q` defaults to 1 (an int, so `q_*` distributions then give ints).
    """

    name: str
    distribution: Distribution
    value: Any = None
    values: tuple[Any, ...] = ()
    probabilities: tuple[float, ...] | None = None
    min: float | None = None
    max: float | None = None
    q: float = 1
    mu: float = 0.0
    sigma: float = 1.0
    a: float = 1.0
    b: float = 1.0

    def grid_values(self) -> list[Any]:
        """The finite values a grid search walks (`int_uniform` and `q_uniform` include `max`)."""
        if self.distribution == "constant":
            return [self.value]
        if self.distribution == "categorical":
            return list(self.values)
        assert self.min is not None and self.max is not None  # validated by _parse_parameter
        if self.distribution == "int_uniform":
            return list(range(int(self.min), int(self.max) + 1))
        steps = math.floor((self.max - self.min) / self.q + 1e-9)
        as_int = _is_int(self.q) and _is_int(self.min)
        return [int(self.min + k * self.q) if as_int else self.min + k * self.q for k in range(steps + 1)]


@dataclass(frozen=True)
class MetricSpec:
    """The metric a sweep optimizes; `target` stops the sweep once a trial reaches it."""

    name: str
    goal: Goal = "minimize"
    target: float | None = None


@dataclass(frozen=True)
class HyperbandSpec:
    """`early_terminate: {type: hyperband, ...}`, as Optuna's `HyperbandPruner` arguments.

    `min_iter` is the first step at which trials are compared; `eta` the reduction factor; `max_iter`
    the last step (or "auto": the longest trial seen). W&B's `max_iter` + `s` form sets
    `min_iter = max_iter / eta**s`.
    """

    min_iter: int
    eta: int = 3
    max_iter: int | None = None


@dataclass
class SweepConfig:
    """A W&B sweep config, validated, with the original dict kept unchanged for the W&B engine.

    Example:
        >>> cfg = SweepConfig.from_dict({"method": "random", "metric": {"name": "val/loss"},
        ...                              "parameters": {"lr": {"min": 1e-4, "max": 1e-1}}})
        >>> cfg.parameters["lr"].distribution
        'uniform'
    """

    method: Method
    parameters: dict[str, ParameterSpec]
    name: str = "sweep"
    metric: MetricSpec | None = None
    early_terminate: HyperbandSpec | None = None
    run_cap: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The dict this config was parsed from, untouched (what `to_dict` returns and W&B receives)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], default_name: str = "sweep") -> SweepConfig:
        """Parse and validate a W&B sweep config; errors name the field path and the value received."""
        if not isinstance(data, Mapping):
            raise _error("sweep config", "a mapping", type(data).__name__)
        raw = copy.deepcopy(dict(data))
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            hint = " (multi-objective 'metrics' and custom 'scheduler' are not supported)" if (
                {"metrics", "scheduler"} & set(unknown)) else ""
            raise _error(unknown[0], f"one of the W&B sweep keys {sorted(_TOP_KEYS)}{hint}", raw[unknown[0]])
        method = raw.get("method")
        if method not in get_args(Method):
            raise _error("method", f"one of {list(get_args(Method))}", method)
        metric = _parse_metric(raw["metric"]) if "metric" in raw else None
        early = _parse_hyperband(raw["early_terminate"]) if "early_terminate" in raw else None
        if metric is None and (method == "bayes" or early is not None):
            why = "bayes search" if method == "bayes" else "early_terminate"
            raise _error("metric", f"a mapping with 'name' ({why} needs the metric to compare trials)", None)
        method = cast(Method, method)  # checked just above
        parameters = _parse_parameters(raw.get("parameters"), method)
        return cls(method=method, parameters=parameters, name=_parse_name(raw.get("name", default_name)),
                   metric=metric, early_terminate=early, run_cap=_parse_run_cap(raw.get("run_cap")), raw=raw)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SweepConfig:
        """Parse a YAML sweep file; the sweep name defaults to the file's stem."""
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        if not isinstance(data, dict):
            raise _error(f"sweep config {path}", "a YAML mapping", type(data).__name__)
        return cls.from_dict(data, default_name=Path(path).stem)

    def to_dict(self) -> dict[str, Any]:
        """The original config, unchanged (a copy): what `wandb.sweep` receives."""
        return copy.deepcopy(self.raw)

    @property
    def metric_name(self) -> str:
        """The optimized metric's name (`"objective"` when the config names none)."""
        return self.metric.name if self.metric else _DEFAULT_METRIC

    @property
    def goal(self) -> Goal:
        return self.metric.goal if self.metric else "minimize"

    @property
    def grid_size(self) -> int:
        """Number of grid points (grid sweeps only)."""
        return math.prod(len(p.grid_values()) for p in self.parameters.values())


def _parse_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _error("name", "a non-empty string", name)
    # The name names a file, an Optuna study and run names, so it is slugged like run names are.
    return _slug(name)


def _parse_run_cap(value: Any) -> int | None:
    if value is not None and (not _is_int(value) or value <= 0):
        raise _error("run_cap", "a positive integer", value)
    return value


def _parse_metric(data: Any) -> MetricSpec:
    if not isinstance(data, Mapping):
        raise _error("metric", "a mapping with 'name' and 'goal'", data)
    allowed = {"name", "goal", "target", "impute", "impute_while_running"}  # impute*: W&B-server only
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _error(f"metric.{unknown[0]}", f"one of {sorted(allowed)}", data[unknown[0]])
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _error("metric.name", "a non-empty string", name)
    goal = data.get("goal", "minimize")
    if goal not in get_args(Goal):
        raise _error("metric.goal", "'minimize' or 'maximize'", goal)
    target = data.get("target")
    if target is not None and not _is_number(target):
        raise _error("metric.target", "a number", target)
    return MetricSpec(name=name, goal=goal, target=target)


def _parse_hyperband(data: Any) -> HyperbandSpec:
    if not isinstance(data, Mapping):
        raise _error("early_terminate", "a mapping with type: hyperband", data)
    if data.get("type") != "hyperband":
        raise _error("early_terminate.type", "'hyperband'", data.get("type"))
    allowed = {"type", "min_iter", "max_iter", "s", "eta", "strict"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _error(f"early_terminate.{unknown[0]}", f"one of {sorted(allowed)}", data[unknown[0]])
    eta = data.get("eta", 3)
    if not _is_int(eta) or eta < 2:
        raise _error("early_terminate.eta", "an integer >= 2 (Optuna's reduction_factor)", eta)
    max_iter = data.get("max_iter")
    if max_iter is not None and (not _is_int(max_iter) or max_iter < 1):
        raise _error("early_terminate.max_iter", "a positive integer", max_iter)
    if "min_iter" in data:
        min_iter = data["min_iter"]
        if not _is_int(min_iter) or min_iter < 1:
            raise _error("early_terminate.min_iter", "a positive integer", min_iter)
    elif max_iter is not None and "s" in data:
        s = data["s"]
        if not _is_int(s) or s < 0:
            raise _error("early_terminate.s", "a non-negative integer", s)
        min_iter = max(1, round(max_iter / eta**s))
    else:
        raise _error("early_terminate", "'min_iter', or 'max_iter' with 's'", dict(data))
    if max_iter is not None and max_iter <= min_iter:
        raise _error("early_terminate.max_iter", f"an integer > min_iter ({min_iter})", max_iter)
    return HyperbandSpec(min_iter=min_iter, eta=eta, max_iter=max_iter)


def _parse_parameters(data: Any, method: str) -> dict[str, ParameterSpec]:
    if not isinstance(data, Mapping) or not data:
        raise _error("parameters", "a non-empty mapping of parameter name -> spec", data)
    specs = {}
    for name, spec in data.items():
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise _error("parameters", "names of letters, digits, '_', '.', '-' (not starting with a digit)",
                         name)
        specs[name] = _parse_parameter(name, spec)
    if method == "grid":
        _check_grid(specs)
    return specs


def _infer_distribution(path: str, spec: Mapping[str, Any]) -> str:
    """W&B's rule when `distribution` is omitted."""
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        return "int_uniform" if _is_int(spec["min"]) and _is_int(spec["max"]) else "uniform"
    raise _error(path, "'value', 'values', 'min' and 'max', or a 'distribution'", dict(spec))


def _parse_parameter(name: str, spec: Any) -> ParameterSpec:
    path = f"parameters.{name}"
    if not isinstance(spec, Mapping):
        raise _error(path, "a mapping with 'value', 'values' or 'distribution'", spec)
    if "parameters" in spec:
        raise _error(f"{path}.parameters", "flat parameters (nested groups are not supported; "
                     f"name them '{name}.<key>')", spec["parameters"])
    dist = spec.get("distribution") or _infer_distribution(path, spec)
    if dist == "categorical_w_probabilities":
        dist = "categorical"
    if dist not in _KEYS:
        raise _error(f"{path}.distribution", f"one of {sorted(_KEYS)}", dist)
    required, optional = _KEYS[dist]
    keys = set(spec) - {"distribution"}
    for key in sorted(required - keys):
        raise _error(f"{path}.{key}", f"a value ({dist} needs {sorted(required)})", None)
    for key in sorted(keys - required - optional):
        raise _error(f"{path}.{key}", f"no '{key}' for {dist} (allowed: {sorted(required | optional)})",
                     spec[key])
    fields: dict[str, Any] = {k: spec[k] for k in keys}
    _check_numbers(path, dist, fields)
    if dist == "categorical":
        fields.update(_check_values(path, fields["values"], fields.get("probabilities")))
    return ParameterSpec(name=name, distribution=cast(Distribution, dist), **fields)


def _check_numbers(path: str, dist: str, fields: Mapping[str, Any]) -> None:
    for key in ("min", "max", "q", "mu", "sigma", "a", "b"):
        if key in fields and not _is_number(fields[key]):
            raise _error(f"{path}.{key}", "a finite number", fields[key])
    if dist == "int_uniform":
        for key in ("min", "max"):
            if not _is_int(fields[key]):
                raise _error(f"{path}.{key}", "an integer (int_uniform)", fields[key])
    if "min" in fields and fields["min"] >= fields["max"]:
        raise _error(f"{path}.min", f"a number < max ({fields['max']})", fields["min"])
    if dist in _POSITIVE_MIN and fields["min"] <= 0:
        raise _error(f"{path}.min", f"a number > 0 ({dist} takes values, not exponents)", fields["min"])
    for key in ("q", "sigma", "a", "b"):
        if key in fields and fields[key] <= 0:
            raise _error(f"{path}.{key}", "a number > 0", fields[key])


def _check_values(path: str, values: Any, probabilities: Any) -> dict[str, Any]:
    if not isinstance(values, (list, tuple)) or not values:
        raise _error(f"{path}.values", "a non-empty list", values)
    encoded = [_encode_choice(v) for v in values]
    if len(set(map(repr, encoded))) != len(encoded):
        raise _error(f"{path}.values", "distinct values", list(values))
    if probabilities is None:
        return {"values": tuple(values)}
    if (not isinstance(probabilities, (list, tuple)) or len(probabilities) != len(values)
            or not all(_is_number(p) and p >= 0 for p in probabilities)):
        raise _error(f"{path}.probabilities", f"{len(values)} non-negative numbers (one per value)",
                     probabilities)
    if abs(sum(probabilities) - 1.0) > 1e-6:
        raise _error(f"{path}.probabilities", "numbers summing to 1", probabilities)
    return {"values": tuple(values), "probabilities": tuple(float(p) for p in probabilities)}


def _check_grid(specs: Mapping[str, ParameterSpec]) -> None:
    for name, spec in specs.items():
        if spec.distribution not in _GRID_OK:
            raise _error(f"parameters.{name}", "a finite discrete parameter for grid search ('value', "
                         "'values', int_uniform or q_uniform)", f"distribution {spec.distribution}")
        if spec.probabilities is not None:
            raise _error(f"parameters.{name}.probabilities", "no probabilities (grid search walks every "
                         "value once)", list(spec.probabilities))
    size = math.prod(len(s.grid_values()) for s in specs.values())
    if size > _MAX_GRID:
        raise _error("parameters", f"a grid of at most {_MAX_GRID} points (use random or bayes)",
                     f"{size} points")


# ---- W&B distributions as Optuna suggestions ----------------------------------------------------------
def _encode_choice(value: Any) -> Any:
    """Optuna stores str/int/float/bool/None choices; lists and dicts travel as JSON strings."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def _is_encoded(values: Sequence[Any]) -> bool:
    return any(_encode_choice(v) is not v for v in values)


def _choices(values: Sequence[Any]) -> list[Any]:
    return [_encode_choice(v) for v in values]


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
    return int(steps * q) if _is_int(q) else steps * q


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


def _grid_search_space(config: SweepConfig) -> dict[str, list[Any]]:
    return {n: _choices(s.grid_values()) for n, s in config.parameters.items() if s.distribution != "constant"}


# ---- the objective and its trial context --------------------------------------------------------------
class TrialContext:
    """What an objective receives next to its parameters: progress reporting, pruning, its tracker.

    `report(value, step)` records an intermediate value of the sweep metric: into the trial's tracked run,
    into Optuna (for hyperband), and raises `optuna.TrialPruned` when the pruner stops the trial (let it
    propagate: the trial is then recorded as PRUNED with its last value).

    Attributes:
        number: The trial number within the sweep (Optuna's trial number, or the W&B run counter).
        sweep_name: The sweep's name.
        params: The sampled parameters.
        tracker: The trial's `AdvancedExperimentTracker` (None when tracking is off): log anything else here.
        last_value: The last value reported, or None.
    """

    def __init__(self, number: int, sweep_name: str, params: dict[str, Any], metric_name: str, *,
                 optuna_trial: optuna.Trial | None = None, tracker: Any = None, wandb_run: Any = None) -> None:
        self.number = number
        self.sweep_name = sweep_name
        self.params = params
        self.metric_name = metric_name
        self.tracker = tracker
        self.last_value: float | None = None
        self._trial = optuna_trial
        self._wandb_run = wandb_run

    def report(self, value: float, step: int, *, log: bool = True) -> None:
        """Record an intermediate metric value at `step`; raises `optuna.TrialPruned` if pruned.

        `log=False` skips the tracker (the value was logged there already, see `reporting_tracker`).
        """
        if not _is_int(step) or step < 0:
            raise _error("step", "a non-negative integer", step)
        value = float(value)
        self.last_value = value
        if self.tracker is not None and log:
            self.tracker.log_metrics({self.metric_name: value}, step=step)
        if self._wandb_run is not None:
            self._wandb_run.log({self.metric_name: value}, step=step)
        if self._trial is not None:
            self._trial.report(value, step)
            if self._trial.should_prune():
                import optuna

                raise optuna.TrialPruned(f"trial {self.number} pruned at step {step} ({value:.6g})")

    def should_prune(self) -> bool:
        """True when the pruner would stop this trial now (always False on the W&B engine)."""
        return bool(self._trial is not None and self._trial.should_prune())

    def reporting_tracker(self) -> Any:
        """The trial's tracker, wrapped so that each `log_metrics` holding the sweep metric also reports it.

        Hand it to a training loop that logs the metric itself (`models.training.train` logs `val/loss` at
        every evaluation): hyperband then sees every evaluation and can stop the loop (`optuna.TrialPruned`
        propagates out of `log_metrics`). Every other attribute is the tracker's own.
        """
        if self.tracker is None:
            raise RuntimeError("reporting_tracker: this trial has no tracker (run_sweep(..., track=False))")
        return _ReportingTracker(self)


class _ReportingTracker:
    def __init__(self, trial: TrialContext) -> None:
        self._trial = trial
        self._tracker = trial.tracker

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self._tracker.log_metrics(metrics, step=step)
        name = self._trial.metric_name
        if name in metrics:
            self._trial.report(float(metrics[name]), self._tracker.step if step is None else step, log=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)


class Objective(Protocol):
    """`objective(params, trial) -> float`: train/evaluate with `params`, return the sweep metric."""

    def __call__(self, params: dict[str, Any], trial: TrialContext) -> float: ...


def _resolve_objective(objective: Objective | str) -> Objective:
    if not isinstance(objective, str):
        return objective
    module_name, _, attr = objective.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"objective: expected an importable 'module:function', received {objective!r} "
                         f"({type(exc).__name__}: {exc})") from exc
    if not callable(target):
        raise _error("objective", "a callable", objective)
    return target  # type: ignore[no-any-return]


def _check_objective(objective: Objective | str, workers: int) -> Objective | str:
    if isinstance(objective, str):
        if not re.match(r"^[\w.]+:[\w.]+$", objective):
            raise _error("objective", "a callable or a 'module:function' string", objective)
        _resolve_objective(objective)  # fail now, not in every worker
        return objective
    if not callable(objective):
        raise _error("objective", "a callable or a 'module:function' string", objective)
    if workers > 1:
        try:
            pickle.dumps(objective)
        except Exception as exc:  # pickling errors vary by object type
            raise _error("objective", "a module-level function or 'module:function' string when workers > 1 "
                         f"(worker processes import it; {type(exc).__name__})", objective) from exc
    return objective


def _finite(value: Any, metric: str) -> float:
    """The objective's return value as a float (a Python, NumPy or 0-d tensor number)."""
    try:
        number = float(value) if not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"objective: expected a finite number (the metric {metric!r}), received {value!r}")
    return number


def run_trial(config: SweepConfig, objective: Objective, trial: optuna.Trial, *, track: bool = True,
              tracking: Mapping[str, Any] | None = None) -> float:
    """Run one trial as a tracked run: sample parameters, call the objective, log hparams and the metric.

    The run is `AdvancedExperimentTracker(TrackingConfig(experiment_name=<sweep>, group=<sweep>,
    run_name=<sweep>-trial<NNN>, **tracking))`; its hyperparameters and final metric go to
    `log_hyperparameters` (TensorBoard HParams, W&B config/summary), intermediate values to `log_metrics`.

    Args:
        config: The sweep config.
        objective: `objective(params, trial_context) -> float`.
        trial: The Optuna trial.
        track: False runs the objective without a tracked run (`TrialContext.tracker` is None).
        tracking: Extra `TrackingConfig` fields (`log_dir`, `use_wandb`, `wandb_mode`, ...).

    Returns:
        The objective's value.
    """
    params = sample_params(config, trial)
    trial.set_user_attr("params", params)  # readable values next to Optuna's raw ones (optuna-dashboard)
    if not track:
        ctx = TrialContext(trial.number, config.name, params, config.metric_name, optuna_trial=trial)
        return _finite(objective(params, ctx), config.metric_name)

    from .config import TrackingConfig
    from .tracker import AdvancedExperimentTracker

    run_name = f"{config.name}-trial{trial.number:03d}"
    trial.set_user_attr("run_name", run_name)
    settings = {"experiment_name": config.name, "group": config.name, "run_name": run_name, **(tracking or {})}
    with AdvancedExperimentTracker(TrackingConfig(**settings)) as tracker:
        ctx = TrialContext(trial.number, config.name, params, config.metric_name, optuna_trial=trial,
                           tracker=tracker)
        try:
            value = _finite(objective(params, ctx), config.metric_name)
        except Exception as exc:
            import optuna

            if isinstance(exc, optuna.TrialPruned) and ctx.last_value is not None:
                tracker.log_hyperparameters(params, metrics={config.metric_name: ctx.last_value})
            raise
        tracker.log_hyperparameters(params, metrics={config.metric_name: value})
    return value


# ---- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialRecord:
    """One trial of a sweep, as the summary shows it."""

    number: int
    state: TrialStateName
    params: dict[str, Any]
    value: float | None
    """The final metric; for a pruned trial, its last reported value."""
    steps: int = 0
    """How many intermediate values the trial reported."""
    run_name: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """The outcome of a sweep: best trial, every trial, the history plot."""

    name: str
    metric: str
    goal: Goal
    best_params: dict[str, Any] | None
    best_value: float | None
    best_number: int | None
    trials: list[TrialRecord]
    storage: str
    """The study's storage URL (password redacted)."""
    plot_path: Path | None = None

    def completed(self) -> list[TrialRecord]:
        """The trials that finished normally."""
        return [t for t in self.trials if t.state == "COMPLETE"]

    def format_table(self) -> str:
        """A plain-text table of trials: number, state, value, parameters; the best is marked `*`."""
        names = list(dict.fromkeys(k for t in self.trials for k in t.params))
        header = ["", "trial", "state", self.metric, *names]
        rows = [["*" if t.number == self.best_number else "", str(t.number), t.state, _fmt(t.value),
                 *(_fmt(t.params.get(n, "")) for n in names)] for t in self.trials]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        best = ("no completed trial" if self.best_number is None else
                f"best trial {self.best_number}: {self.metric}={_fmt(self.best_value)} {self.best_params}")
        return f"sweep {self.name!r} ({self.goal} {self.metric}): {best}\n{self.format_table()}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _record(config: SweepConfig, trial: optuna.trial.FrozenTrial) -> TrialRecord:
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return TrialRecord(number=trial.number, state=cast(TrialStateName, trial.state.name),
                       params=decode_params(config, trial.params), value=value, steps=len(trial.intermediate_values),
                       run_name=trial.user_attrs.get("run_name"))


def summarize(study: optuna.Study, config: SweepConfig, folder: str | os.PathLike[str] | None = None,
              storage: str = "") -> SweepResult:
    """Summarize a study: best parameters and value, every trial, and (with `folder`) a history plot PNG."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = (min if config.goal == "minimize" else max)(done, key=lambda t: float(cast(float, t.value))) if done \
        else None
    plot = _save_history_plot(study, Path(folder)) if folder is not None and done else None
    return SweepResult(name=config.name, metric=config.metric_name, goal=config.goal,
                       best_params=decode_params(config, best.params) if best else None,
                       best_value=best.value if best else None, best_number=best.number if best else None,
                       trials=[_record(config, t) for t in trials], storage=redact_secrets(storage),
                       plot_path=plot)


def _save_history_plot(study: optuna.Study, folder: Path) -> Path:
    import matplotlib.pyplot as plt  # headless machines fall back to Agg on their own
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "optimization_history.png"
    with _no_experimental_warnings():
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    figure = cast("Figure", ax.figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


# ---- the Optuna engine ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    """Everything a worker process needs to join the study (picklable)."""

    config: SweepConfig
    objective: Any  # Objective | str
    storage_url: str
    seed: int
    heartbeat_interval: int
    track: bool
    tracking: dict[str, Any]
    worker: int = 0
    n_trials: int = 0


@contextlib.contextmanager
def _no_experimental_warnings() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning: the heartbeat API and plots carry it though long in use."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _storage(job: _Job) -> optuna.storages.RDBStorage:
    import optuna

    try:  # Optuna >= 4.9 renamed the callback class and its RDBStorage argument
        retry_cls: Any = optuna.storages.RetryHeartbeatStaleTrialCallback
        callback_arg = "heartbeat_stale_trial_callback"
    except AttributeError:
        retry_cls, callback_arg = optuna.storages.RetryFailedTrialCallback, "failed_trial_callback"
    # SQLite serialises writers; a long busy timeout lets worker processes queue instead of failing.
    engine = {"connect_args": {"timeout": 60}} if job.storage_url.startswith("sqlite") else None
    kwargs = {callback_arg: retry_cls(max_retry=3)}
    storage = optuna.storages.RDBStorage(_driver_url(job.storage_url), engine_kwargs=engine,
                                         heartbeat_interval=job.heartbeat_interval, **kwargs)
    if storage.engine.name == "sqlite":
        _tune_sqlite(storage.engine)
    return storage


def _driver_url(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is installed."""
    import importlib.util

    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def _tune_sqlite(engine: Any) -> None:
    """WAL journal + `synchronous=NORMAL`: readers (the progress poll, other workers) no longer block the
    writer, and a commit costs no fsync (WAL stays consistent on a crash; the last commits may be lost on
    power failure, which the heartbeat/retry path already covers)."""
    import sqlalchemy

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections predate the listener
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # persistent: stored in the database file


def _sampler(job: _Job, n_existing: int) -> optuna.samplers.BaseSampler:
    import optuna

    config = job.config
    if config.method == "grid":
        # Every process must shuffle the grid identically: grid ids index into the shuffled list.
        return _grid_sampler(_grid_search_space(config), seed=job.seed)
    # Distinct streams per worker and per resumption, so workers (and a resumed sweep) do not replay the
    # same draws; a fresh single-worker sweep with the same seed is reproducible.
    seed = job.seed + 1_000_003 * n_existing + 7919 * job.worker
    if config.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


@functools.cache
def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):  # type: ignore[misc]
        """Optuna's GridSampler, tolerating the grid points a resumed sweep enqueues (no `grid_id`)."""

        def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any,
                        values: Any) -> None:
            # The base class looks up the trial's grid_id to decide when to stop; an enqueued point has
            # none, and `_StopWhenDone` already stops the sweep when every point is done.
            if "fixed_params" not in trial.system_attrs:
                super().after_trial(study, trial, state, values)

    return GridSampler


def _grid_sampler(search_space: dict[str, list[Any]], seed: int) -> Any:
    return _grid_sampler_class()(search_space, seed=seed)


def _pruner(config: SweepConfig) -> optuna.pruners.BasePruner:
    import optuna

    hb = config.early_terminate
    if hb is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=hb.min_iter, max_resource=hb.max_iter or "auto",
                                          reduction_factor=hb.eta)


def _open_study(job: _Job) -> optuna.Study:
    """Create the study, or load it (resume) after checking it was run with the same config."""
    import optuna

    with _no_experimental_warnings():
        storage = _storage(job)
    study = optuna.create_study(storage=storage, pruner=_pruner(job.config), study_name=job.config.name,
                                direction=job.config.goal, load_if_exists=True)
    _check_same_sweep(study, job)
    study.sampler = _sampler(job, len(study.get_trials(deepcopy=False)))
    return study


def _check_same_sweep(study: optuna.Study, job: _Job) -> None:
    config = job.config
    # What decides which trials exist and how they compare; `run_cap`, `metric.target` may change.
    mine = json.loads(json.dumps({"method": config.method, "parameters": config.raw.get("parameters"),
                                  "metric": [config.metric_name, config.goal]}, default=str))
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", mine)
        return
    for key, value in mine.items():
        if stored.get(key) != value:
            raise ValueError(f"{key}: the study {config.name!r} in {redact_secrets(job.storage_url)} was run with "
                             f"{stored.get(key)!r}, received {value!r}; give the sweep another name (or root) "
                             "to start afresh")


def _point(config: SweepConfig, params: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(repr(params.get(n)) for n in _grid_search_space(config))


def _enqueue_grid_remainder(study: optuna.Study, config: SweepConfig, finished_before: set[int]) -> int:
    """On resume, queue every grid point nobody finished, runs or has queued; returns how many can run.

    Points that failed before this call are queued again; a point that failed during it is not (it would
    fail again in a loop).

    A waiting trial is popped atomically by exactly one worker, so no point runs twice; GridSampler's
    own choice among unvisited points would be the same in every process (same seed) and could collide,
    and it treats failed points as visited (never re-run).
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if not trials:
        return _cap(config) or 0  # fresh study: GridSampler maps trial number -> grid point, uniquely
    kept = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    taken = {_point(config, t.system_attrs.get("fixed_params", t.params)) for t in trials
             if t.state in kept or (t.state == TrialState.FAIL and t.number not in finished_before)}
    space = _grid_search_space(config)
    for grid_id, values in enumerate(_product(space)):
        params = dict(zip(space, values, strict=True))
        if _point(config, params) not in taken:
            study.enqueue_trial(params, user_attrs={"grid_point": grid_id})
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _product(space: Mapping[str, list[Any]]) -> list[tuple[Any, ...]]:
    import itertools

    return list(itertools.product(*space.values()))


def _counts(study: optuna.Study, config: SweepConfig) -> tuple[int, int]:
    """(finished runs, running trials); grid sweeps count distinct finished grid points."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    done = [t for t in trials if t.state != TrialState.RUNNING]
    n_done = len({_point(config, t.params) for t in done}) if config.method == "grid" else len(done)
    return n_done, len(trials) - len(done)


def _cap(config: SweepConfig) -> int | None:
    if config.method == "grid":
        return min(config.grid_size, config.run_cap or config.grid_size)
    return config.run_cap


class _StopWhenDone:
    """Optuna callback: stop this worker once the sweep reached `run_cap` or the metric's `target`."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        cap, metric = _cap(self.config), self.config.metric
        if cap is not None and _counts(study, self.config)[0] >= cap:
            study.stop()
        if metric is not None and metric.target is not None and trial.value is not None:
            reached = trial.value <= metric.target if metric.goal == "minimize" else trial.value >= metric.target
            if reached:
                study.stop()


class _OptunaObjective:
    """The function Optuna calls: resolves the user's objective once per process, runs a tracked trial."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self._fn: Objective | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        if self._fn is None:
            self._fn = _resolve_objective(self.job.objective)
        # Where the trial ran: which worker of which machine (to find its logs).
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        return run_trial(self.job.config, self._fn, trial, track=self.job.track, tracking=self.job.tracking)


def _optimize(study: optuna.Study, job: _Job, callbacks: Sequence[Callable[..., None]] = ()) -> None:
    # Exceptions are recorded as FAIL trials (the sweep goes on, like a W&B agent); their tracebacks
    # are logged by Optuna.
    with _no_experimental_warnings():
        study.optimize(_OptunaObjective(job), n_trials=job.n_trials, catch=(Exception,),
                       callbacks=[_StopWhenDone(job.config), *callbacks])


def _worker_main(job: _Job) -> None:
    """Entry point of a worker process (spawned): join the study and run this worker's share."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _optimize(_open_study(job), job)


TrialCallback = Callable[[TrialRecord, int, int], None]
"""`on_trial_end(record, finished, planned)`: called in the calling process as trials finish; `finished` and
`planned` count the trials of this `run_sweep` call."""


@dataclass
class _Progress:
    callback: TrialCallback | None
    seen: set[int]
    finished: int = 0
    planned: int = 0

    def report(self, config: SweepConfig, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        for t in sorted(trials, key=lambda t: t.number):
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                self.finished += 1
                if self.callback is not None:
                    self.callback(_record(config, t), self.finished, max(self.planned, self.finished))


def _run_round(study: optuna.Study, job: _Job, n_trials: int, workers: int, progress: _Progress) -> list[int]:
    """Run `n_trials` trials over `workers` processes; returns the exit codes of failed workers."""
    progress.seen |= {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    progress.planned += n_trials

    def report(trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        progress.report(job.config, trials)

    shares = [share for i in range(workers) if (share := n_trials // workers + (i < n_trials % workers))]
    if len(shares) == 1:  # one process's worth of work (e.g. a retried trial) runs here, no spawn
        _optimize(study, replace(job, n_trials=n_trials), [lambda s, t: report([t])])
        return []
    ctx = multiprocessing.get_context("spawn")  # fork would copy live DB connections and threads
    procs = [ctx.Process(target=_worker_main, args=(replace(job, worker=i, n_trials=share),),
                         name=f"sweep-{job.config.name}-worker{i}")
             for i, share in enumerate(shares)]
    for proc in procs:
        proc.start()
    while any(p.is_alive() for p in procs):
        time.sleep(0.5)
        report(study.get_trials(deepcopy=False))
    for proc in procs:
        proc.join()
    report(study.get_trials(deepcopy=False))
    return [p.exitcode for p in procs if p.exitcode]  # type: ignore[misc]


def sweep_storage_url(name: str, root: str | os.PathLike[str] = "runs/sweeps") -> str:
    """The default storage of sweep `name`: the SQLite file `<root>/<name>.db`."""
    path = Path(root) / f"{name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def run_sweep(config: SweepConfig | Mapping[str, Any] | str | os.PathLike[str], objective: Objective | str, *,
              count: int | None = None, workers: int = 1, storage: str | None = None,
              root: str | os.PathLike[str] = "runs/sweeps", seed: int = 0, track: bool = True,
              tracking: Mapping[str, Any] | None = None, heartbeat_interval: int = 10, plot: bool = True,
              on_trial_end: TrialCallback | None = None) -> SweepResult:
    """Run (or resume) a sweep locally with Optuna and return its summary.

    The study is named after the sweep and kept in `storage` (default `sqlite:///<root>/<name>.db`), so
    calling this again resumes it: finished trials are kept, the count continues towards `run_cap` (grid:
    towards the grid size), failed or interrupted grid points are re-run. A worker killed mid-trial stops
    sending heartbeats; after `2 * heartbeat_interval` s its trial is marked FAIL and re-queued with the same
    parameters, and this call waits for that before returning.

    Args:
        config: A `SweepConfig`, a W&B sweep dict, or a YAML file path.
        objective: `objective(params, trial_context) -> float`, or a `"module:function"` string. With
            `workers > 1` it must be importable (a module-level function).
        count: How many trials this call runs at most (W&B agent `count`); needed for random/bayes sweeps
            without `run_cap`.
        workers: Worker processes on this machine, all sharing the study.
        storage: A SQLAlchemy URL (`postgresql://user@host:5432/db`) shared by workers on many machines.
        root: Folder of the default SQLite storage and of the sweep's runs and plot (`<root>/<name>/`).
        seed: Sampler seed (random/bayes reproducible with one worker; grid order).
        track: Make each trial a tracked run (`AdvancedExperimentTracker`).
        tracking: Extra `TrackingConfig` fields for the trial runs (default `log_dir=<root>/<name>`).
        heartbeat_interval: Seconds between a running trial's heartbeats.
        plot: Save `<root>/<name>/optimization_history.png`.
        on_trial_end: Called in this process as trials finish: `(record, finished, planned)`.

    Returns:
        The `SweepResult` (best parameters and value, every trial, the plot path).
    """
    cfg = config if isinstance(config, SweepConfig) else (
        SweepConfig.from_dict(config) if isinstance(config, Mapping) else SweepConfig.from_yaml(config))
    _check_run_args(count, workers, heartbeat_interval, storage)
    folder = Path(root) / cfg.name
    url = storage or sweep_storage_url(cfg.name, root)
    job = _Job(config=cfg, objective=_check_objective(objective, workers), storage_url=url, seed=seed,
               heartbeat_interval=heartbeat_interval, track=track,
               tracking={"log_dir": str(folder), **(tracking or {})})
    study = _open_study(job)
    _run_until_owed(study, job, count, workers, on_trial_end)
    result = summarize(study, cfg, folder if plot else None, storage=url)
    if track:
        _log_summary(result, job)
    return result


def _check_run_args(count: int | None, workers: int, heartbeat_interval: int, storage: str | None) -> None:
    if count is not None and (not _is_int(count) or count <= 0):
        raise _error("count", "a positive integer or None", count)
    if not _is_int(workers) or workers < 1:
        raise _error("workers", "a positive integer", workers)
    if not _is_int(heartbeat_interval) or heartbeat_interval < 1:
        raise _error("heartbeat_interval", "a positive integer (seconds)", heartbeat_interval)
    if storage is not None and "://" not in storage:
        raise _error("storage", "a database URL such as 'sqlite:///sweep.db' or "
                     "'postgresql://user@host:5432/db'", redact_secrets(storage))


def _run_until_owed(study: optuna.Study, job: _Job, count: int | None, workers: int,
                    on_trial_end: TrialCallback | None) -> None:
    """Run rounds of trials until this call's share is done; wait out trials of dead workers."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    if _cap(job.config) is None and count is None:
        raise _error("count", f"a positive integer: a {job.config.method} sweep without run_cap never ends", None)
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    progress = _Progress(on_trial_end, seen=set(before))
    failed_workers: list[int] = []
    while True:
        with _no_experimental_warnings():  # trials of killed workers -> FAIL -> re-queued, same params
            fail_stale_trials(study)
        n = _owed(study, job.config, count, before, exclude_running=True)
        if job.config.method == "grid":  # only points nobody took: a re-run point would be a duplicate
            n = min(n, _enqueue_grid_remainder(study, job.config, before))
        done_before = _counts(study, job.config)[0]
        if n > 0:
            failed_workers += _run_round(study, job, n, workers, progress)
        if _owed(study, job.config, count, before, exclude_running=False) == 0:
            break
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(job.heartbeat_interval)  # a dead worker's trial turns stale after the grace period
        elif not (n > 0 and _counts(study, job.config)[0] > done_before):
            break  # nothing running and the last round made no progress: its trials fail; stop here
    if failed_workers:
        warnings.warn(f"sweep {job.config.name!r}: worker processes exited with codes {failed_workers}; "
                      "see their output above", RuntimeWarning, stacklevel=3)


def _owed(study: optuna.Study, config: SweepConfig, count: int | None, before: set[int],
          exclude_running: bool) -> int:
    """Trials this call still has to run: within `count` (trials it ran) and the cap (trials done)."""
    cap = _cap(config)
    done, running = _counts(study, config)
    ran = len({t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()} - before)
    budget = [count - ran if count is not None else math.inf,
              cap - done - (running if exclude_running else 0) if cap is not None else math.inf]
    return int(max(0, min(budget)))


def _log_summary(result: SweepResult, job: _Job) -> None:
    """A `<sweep>-summary` run holding the trials table and the history plot, next to the trial runs."""
    from .config import TrackingConfig
    from .tracker import AdvancedExperimentTracker

    settings = {"experiment_name": result.name, "group": result.name, "run_name": f"{result.name}-summary",
                **job.tracking}
    with AdvancedExperimentTracker(TrackingConfig(**settings)) as tracker:
        tracker.log_text("sweep/summary", f"```\n{result}\n```")
        if result.best_params is not None and result.best_value is not None:
            tracker.log_hyperparameters(result.best_params, metrics={result.metric: result.best_value})


# ---- the W&B engine ------------------------------------------------------------------------------------
def _require_wandb_online() -> None:
    from .backends.wandb import api_key_configured

    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise RuntimeError(f"engine 'wandb': expected W&B online (sweeps run on the W&B server), received "
                           f"WANDB_MODE={mode!r}; unset it, or use the local engine (run_sweep, --engine optuna)")
    if not api_key_configured():
        raise RuntimeError("engine 'wandb': expected a W&B API key (WANDB_API_KEY or `wandb login`), found none; "
                           "log in, or use the local engine (run_sweep, --engine optuna), which needs no account")


class _WandbTrial:
    """The function `wandb.agent` calls: one W&B run per trial, the objective fed from `wandb.config`.

    The trial also gets a tracker (TensorBoard + local store; W&B off, the agent's run is the W&B side),
    so objectives written for `run_sweep` run unchanged.
    """

    def __init__(self, config: SweepConfig, objective: Objective, tracking: Mapping[str, Any]) -> None:
        self.config = config
        self.objective = objective
        self.tracking = tracking
        self.number = 0

    def __call__(self) -> None:
        import wandb

        from .config import TrackingConfig
        from .tracker import AdvancedExperimentTracker

        name, metric = self.config.name, self.config.metric_name
        with wandb.init(group=name) as run:
            params = dict(run.config)
            settings = {"experiment_name": name, "group": name, "run_name": f"{name}-{run.id}",
                        **self.tracking, "use_wandb": False}
            with AdvancedExperimentTracker(TrackingConfig(**settings)) as tracker:
                ctx = TrialContext(self.number, name, params, metric, tracker=tracker, wandb_run=run)
                self.number += 1
                value = _finite(self.objective(params, ctx), metric)
                tracker.log_hyperparameters(params, metrics={metric: value})
            run.summary[metric] = value


def run_wandb_sweep(config: SweepConfig | Mapping[str, Any] | str | os.PathLike[str], objective: Objective | str,
                    *, count: int | None = None, project: str | None = None, entity: str | None = None,
                    tracking: Mapping[str, Any] | None = None) -> str:
    """Create a sweep on the W&B server with the config unchanged and run an agent on it.

    Needs W&B online (an API key); hyperband early termination is done by the W&B server, which stops the
    run. Other machines join with `wandb agent <entity>/<project>/<sweep_id>`.

    Args:
        config: A `SweepConfig`, a W&B sweep dict, or a YAML file path.
        objective: `objective(params, trial_context) -> float`, or a `"module:function"` string.
        count: Runs this agent performs (None: until the sweep ends).
        project, entity: Where W&B creates the sweep.
        tracking: Extra `TrackingConfig` fields for each trial's local tracker (default `log_dir="runs"`).

    Returns:
        The W&B sweep id.
    """
    cfg = config if isinstance(config, SweepConfig) else (
        SweepConfig.from_dict(config) if isinstance(config, Mapping) else SweepConfig.from_yaml(config))
    if count is not None and (not _is_int(count) or count <= 0):
        raise _error("count", "a positive integer or None", count)
    _require_wandb_online()
    import wandb

    fn = _resolve_objective(_check_objective(objective, 1))
    sweep_id: str = wandb.sweep(cfg.to_dict(), project=project, entity=entity)
    wandb.agent(sweep_id, function=_WandbTrial(cfg, fn, dict(tracking or {})), count=count, project=project,
                entity=entity)
    return sweep_id


__all__ = ["HyperbandSpec", "MetricSpec", "Objective", "ParameterSpec", "SweepConfig", "SweepResult",
           "TrialContext", "TrialRecord", "decode_params", "run_sweep", "run_trial", "run_wandb_sweep",
           "sample_params", "summarize", "sweep_storage_url"]
