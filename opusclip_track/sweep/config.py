"""The sweep config: W&B's sweep schema parsed and validated into parameter, metric and hyperband specs.

Errors name the field path and the value received (`parameters.lr.min: expected a number < max (0.1), received
0.5`); `SweepConfig.raw` keeps the dict unchanged for the W&B engine.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, cast, get_args

from .._checks import argument_error, is_int, is_number
from ..config import slug

Method = Literal["grid", "random", "bayes"]
Goal = Literal["minimize", "maximize"]
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
_DEFAULT_METRIC = "objective"


class InvalidSweepError(ValueError):
    """The sweep cannot start (its config, the run's arguments or the objective disagree); no trial ran.

    Every error of the config and of the checks before the first trial is one of these, so a caller can tell
    "this sweep is invalid" from a failure later on (`scripts/sweep.py` exits 2 on it).
    """


@contextlib.contextmanager
def invalid_sweep() -> Iterator[None]:
    """Raise a `ValueError` of the code inside (a context or a decorator) as `InvalidSweepError`."""
    try:
        yield
    except InvalidSweepError:
        raise
    except ValueError as exc:
        raise InvalidSweepError(str(exc)) from exc


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

    @property
    def is_discrete(self) -> bool:
        """Whether the parameter takes finitely many values (`value`, `values`, `int_uniform`, `q_uniform`): the
        ones a grid can walk (`grid_values`)."""
        return self.distribution in _GRID_OK

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
        as_int = is_int(self.q) and is_int(self.min)
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
    @invalid_sweep()
    def from_dict(cls, data: Mapping[str, Any], default_name: str = "sweep") -> SweepConfig:
        """Parse and validate a W&B sweep config; errors name the field path and the value received.

        Raises:
            InvalidSweepError: the first invalid field (a `ValueError`).
        """
        if not isinstance(data, Mapping):
            raise argument_error("sweep config", "a mapping", type(data).__name__)
        raw = copy.deepcopy(dict(data))
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            hint = " (multi-objective 'metrics' and custom 'scheduler' are not supported)" if (
                {"metrics", "scheduler"} & set(unknown)) else ""
            raise argument_error(unknown[0], f"one of the W&B sweep keys {sorted(_TOP_KEYS)}{hint}", raw[unknown[0]])
        method = raw.get("method")
        if method not in get_args(Method):
            raise argument_error("method", f"one of {list(get_args(Method))}", method)
        metric = _parse_metric(raw["metric"]) if "metric" in raw else None
        early = _parse_hyperband(raw["early_terminate"]) if "early_terminate" in raw else None
        if metric is None and (method == "bayes" or early is not None):
            why = "bayes search" if method == "bayes" else "early_terminate"
            raise argument_error("metric", f"a mapping with 'name' ({why} needs the metric to compare trials)", None)
        method = cast(Method, method)  # checked just above
        parameters = _parse_parameters(raw.get("parameters"), method)
        return cls(method=method, parameters=parameters, name=_parse_name(raw.get("name", default_name)),
                   metric=metric, early_terminate=early, run_cap=_parse_run_cap(raw.get("run_cap")), raw=raw)

    @classmethod
    def coerce(cls, config: SweepSource) -> SweepConfig:
        """`config` itself, or the config parsed from a W&B sweep dict or a YAML file path."""
        if isinstance(config, SweepConfig):
            return config
        return cls.from_dict(config) if isinstance(config, Mapping) else cls.from_yaml(config)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SweepConfig:
        """Parse a YAML sweep file; the sweep name defaults to the file's stem."""
        import yaml

        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise InvalidSweepError(f"sweep config {path}: expected valid YAML, received a file YAML cannot "
                                        f"parse ({exc})") from exc
        if not isinstance(data, dict):
            raise InvalidSweepError(str(argument_error(f"sweep config {path}", "a YAML mapping", type(data).__name__)))
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

    @property
    def space_size(self) -> int | None:
        """How many distinct points the search space has when every parameter is discrete, else None."""
        if not all(p.is_discrete for p in self.parameters.values()):
            return None
        return self.grid_size


SweepSource = Union[SweepConfig, Mapping[str, Any], str, "os.PathLike[str]"]
"""What the engines accept as a config: a `SweepConfig`, a W&B sweep dict, or a YAML file path."""


def _parse_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise argument_error("name", "a non-empty string", name)
    # The name names a file, an Optuna study and run names, so it is slugged like run names are.
    return slug(name)


def _parse_run_cap(value: Any) -> int | None:
    if value is not None and (not is_int(value) or value <= 0):
        raise argument_error("run_cap", "a positive integer", value)
    return value


def _parse_metric(data: Any) -> MetricSpec:
    if not isinstance(data, Mapping):
        raise argument_error("metric", "a mapping with 'name' and 'goal'", data)
    allowed = {"name", "goal", "target", "impute", "impute_while_running"}  # impute*: W&B-server only
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise argument_error(f"metric.{unknown[0]}", f"one of {sorted(allowed)}", data[unknown[0]])
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise argument_error("metric.name", "a non-empty string", name)
    goal = data.get("goal", "minimize")
    if goal not in get_args(Goal):
        raise argument_error("metric.goal", "'minimize' or 'maximize'", goal)
    target = data.get("target")
    if target is not None and not is_number(target, finite=True):
        raise argument_error("metric.target", "a number", target)
    return MetricSpec(name=name, goal=goal, target=target)


def _parse_hyperband(data: Any) -> HyperbandSpec:
    if not isinstance(data, Mapping):
        raise argument_error("early_terminate", "a mapping with type: hyperband", data)
    if data.get("type") != "hyperband":
        raise argument_error("early_terminate.type", "'hyperband'", data.get("type"))
    allowed = {"type", "min_iter", "max_iter", "s", "eta", "strict"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise argument_error(f"early_terminate.{unknown[0]}", f"one of {sorted(allowed)}", data[unknown[0]])
    eta = data.get("eta", 3)
    if not is_int(eta) or eta < 2:
        raise argument_error("early_terminate.eta", "an integer >= 2 (Optuna's reduction_factor)", eta)
    max_iter = data.get("max_iter")
    if max_iter is not None and (not is_int(max_iter) or max_iter < 1):
        raise argument_error("early_terminate.max_iter", "a positive integer", max_iter)
    if "min_iter" in data:
        min_iter = data["min_iter"]
        if not is_int(min_iter) or min_iter < 1:
            raise argument_error("early_terminate.min_iter", "a positive integer", min_iter)
    elif max_iter is not None and "s" in data:
        s = data["s"]
        if not is_int(s) or s < 0:
            raise argument_error("early_terminate.s", "a non-negative integer", s)
        min_iter = max(1, round(max_iter / eta**s))
    else:
        raise argument_error("early_terminate", "'min_iter', or 'max_iter' with 's'", dict(data))
    if max_iter is not None and max_iter <= min_iter:
        raise argument_error("early_terminate.max_iter", f"an integer > min_iter ({min_iter})", max_iter)
    return HyperbandSpec(min_iter=min_iter, eta=eta, max_iter=max_iter)


def _parse_parameters(data: Any, method: str) -> dict[str, ParameterSpec]:
    if not isinstance(data, Mapping) or not data:
        raise argument_error("parameters", "a non-empty mapping of parameter name -> spec", data)
    specs = {}
    for name, spec in data.items():
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise argument_error("parameters", "names of letters, digits, '_', '.', '-' (not starting with a digit)",
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
        return "int_uniform" if is_int(spec["min"]) and is_int(spec["max"]) else "uniform"
    raise argument_error(path, "'value', 'values', 'min' and 'max', or a 'distribution'", dict(spec))


def _parse_parameter(name: str, spec: Any) -> ParameterSpec:
    path = f"parameters.{name}"
    if not isinstance(spec, Mapping):
        raise argument_error(path, "a mapping with 'value', 'values' or 'distribution'", spec)
    if "parameters" in spec:
        raise argument_error(f"{path}.parameters", "flat parameters (nested groups are not supported; "
                     f"name them '{name}.<key>')", spec["parameters"])
    dist = spec.get("distribution") or _infer_distribution(path, spec)
    if dist == "categorical_w_probabilities":
        dist = "categorical"
    if dist not in _KEYS:
        raise argument_error(f"{path}.distribution", f"one of {sorted(_KEYS)}", dist)
    required, optional = _KEYS[dist]
    keys = set(spec) - {"distribution"}
    for key in sorted(required - keys):
        raise argument_error(f"{path}.{key}", f"a value ({dist} needs {sorted(required)})", None)
    for key in sorted(keys - required - optional):
        raise argument_error(f"{path}.{key}", f"no '{key}' for {dist} (allowed: {sorted(required | optional)})",
                     spec[key])
    fields: dict[str, Any] = {k: spec[k] for k in keys}
    _check_numbers(path, dist, fields)
    if dist == "categorical":
        fields.update(_check_values(path, fields["values"], fields.get("probabilities")))
    return ParameterSpec(name=name, distribution=cast(Distribution, dist), **fields)


def _check_numbers(path: str, dist: str, fields: Mapping[str, Any]) -> None:
    for key in ("min", "max", "q", "mu", "sigma", "a", "b"):
        if key in fields and not is_number(fields[key], finite=True):
            raise argument_error(f"{path}.{key}", "a finite number", fields[key])
    if dist == "int_uniform":
        for key in ("min", "max"):
            if not is_int(fields[key]):
                raise argument_error(f"{path}.{key}", "an integer (int_uniform)", fields[key])
    if "min" in fields and fields["min"] >= fields["max"]:
        raise argument_error(f"{path}.min", f"a number < max ({fields['max']})", fields["min"])
    if dist in _POSITIVE_MIN and fields["min"] <= 0:
        raise argument_error(f"{path}.min", f"a number > 0 ({dist} takes values, not exponents)", fields["min"])
    for key in ("q", "sigma", "a", "b"):
        if key in fields and fields[key] <= 0:
            raise argument_error(f"{path}.{key}", "a number > 0", fields[key])


def _check_values(path: str, values: Any, probabilities: Any) -> dict[str, Any]:
    if not isinstance(values, (list, tuple)) or not values:
        raise argument_error(f"{path}.values", "a non-empty list", values)
    encoded = [encode_choice(v) for v in values]
    if len(set(map(repr, encoded))) != len(encoded):
        raise argument_error(f"{path}.values", "distinct values", list(values))
    if probabilities is None:
        return {"values": tuple(values)}
    if (not isinstance(probabilities, (list, tuple)) or len(probabilities) != len(values)
            or not all(is_number(p, finite=True) and p >= 0 for p in probabilities)):
        raise argument_error(f"{path}.probabilities", f"{len(values)} non-negative numbers (one per value)",
                     probabilities)
    if abs(sum(probabilities) - 1.0) > 1e-6:
        raise argument_error(f"{path}.probabilities", "numbers summing to 1", probabilities)
    return {"values": tuple(values), "probabilities": tuple(float(p) for p in probabilities)}


def _check_grid(specs: Mapping[str, ParameterSpec]) -> None:
    for name, spec in specs.items():
        if not spec.is_discrete:
            raise argument_error(f"parameters.{name}", "a finite discrete parameter for grid search ('value', "
                         "'values', int_uniform or q_uniform)", f"distribution {spec.distribution}")
        if spec.probabilities is not None:
            raise argument_error(f"parameters.{name}.probabilities", "no probabilities (grid search walks every "
                         "value once)", list(spec.probabilities))
    size = math.prod(len(s.grid_values()) for s in specs.values())
    if size > _MAX_GRID:
        raise argument_error("parameters", f"a grid of at most {_MAX_GRID} points (use random or bayes)",
                     f"{size} points")



def encode_choice(value: Any) -> Any:
    """Optuna stores str/int/float/bool/None choices; lists and dicts travel as JSON strings."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)
