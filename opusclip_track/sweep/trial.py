"""The trial side of a sweep: what an objective receives (`TrialContext`), and one trial run as a tracked run.

Every engine runs a trial inside `tracked_run`, the one place a trial's `AdvancedExperimentTracker` is made.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import math
import pickle
import re
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._checks import argument_error, is_int
from .config import InvalidSweepError, SweepConfig
from .distributions import sample_params

if TYPE_CHECKING:
    import optuna


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
        if not is_int(step) or step < 0:
            raise argument_error("step", "a non-negative integer", step)
        value = float(value)
        self.last_value = value
        if self.tracker is not None and log:
            self.tracker.log_metrics({self.metric_name: value}, step=step)
        if self._wandb_run is not None:  # the true step as a column, as the W&B backend logs (see use_step_axis)
            from ..backends.wandb import STEP_KEY

            self._wandb_run.log({self.metric_name: value, STEP_KEY: step})
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
    """`objective(params, trial) -> float`: train/evaluate with `params`, return the sweep metric.

    An objective may declare what it runs with, as attributes (each optional): `sweep_parameters`, the
    parameter names it accepts; `sweep_metrics`, the metric names it can return; `check_sweep_value(name,
    value)`, which raises `ValueError` or `TypeError` for a value of one parameter it cannot run with. The
    engines then refuse a sweep that names anything else, or a value of a discrete parameter that the check
    refuses, before its first trial (`check_declared`).
    """

    def __call__(self, params: dict[str, Any], trial: TrialContext) -> float: ...


def resolve_objective(objective: Objective | str) -> Objective:
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
        raise argument_error("objective", "a callable", objective)
    return target  # type: ignore[no-any-return]


def check_objective(objective: Objective | str, workers: int) -> Objective | str:
    if isinstance(objective, str):
        if not re.match(r"^[\w.]+:[\w.]+$", objective):
            raise argument_error("objective", "a callable or a 'module:function' string", objective)
        resolve_objective(objective)  # fail now, not in every worker
        return objective
    if not callable(objective):
        raise argument_error("objective", "a callable or a 'module:function' string", objective)
    if workers > 1:
        try:
            pickle.dumps(objective)
        except Exception as exc:  # pickling errors vary by object type
            raise argument_error("objective", "a module-level function or 'module:function' string when workers > 1 "
                         f"(worker processes import it; {type(exc).__name__})", objective) from exc
    return objective


def check_declared(config: SweepConfig, objective: Any) -> None:
    """Refuse a sweep its objective cannot run, before any trial: a parameter name the objective does not
    accept, a metric it never reports, or a value its `check_sweep_value` refuses (see `Objective`; an objective
    that declares nothing passes).

    Values are checked where the space is discrete (`value`, `values`, `int_uniform`, `q_uniform`; a range of
    more than 1,000 values by its two ends). Continuous ranges are not checked up front: a value is only known
    when a trial samples it, and that trial then fails alone with the objective's own message.

    Raises:
        InvalidSweepError: naming the offending names or values, the valid ones and the closest match.
    """
    accepted = getattr(objective, "sweep_parameters", None)
    if accepted is not None:
        unknown = [name for name in config.parameters if name not in accepted]
        if unknown:
            raise InvalidSweepError(
                f"parameters: expected names the objective accepts ({', '.join(sorted(accepted))}), received "
                f"unknown {', '.join(unknown)}{_did_you_mean(unknown, accepted)}")
    reported = getattr(objective, "sweep_metrics", None)
    if reported is not None and config.metric_name not in reported:
        received = repr(config.metric_name) if config.metric else "no metric (add metric: {name: ..., goal: ...})"
        raise InvalidSweepError(
            f"metric.name: expected a metric the objective reports ({', '.join(sorted(reported))}), received "
            f"{received}{_did_you_mean([config.metric_name], reported) if config.metric else ''}")
    check_value = getattr(objective, "check_sweep_value", None)
    if check_value is not None:
        _check_values(config, check_value)


def _check_values(config: SweepConfig, check_value: Any) -> None:
    for name, spec in config.parameters.items():
        if not spec.is_discrete:
            continue
        values = spec.grid_values()
        for value in values if len(values) <= 1000 else [values[0], values[-1]]:
            try:
                check_value(name, value)
            except (ValueError, TypeError) as exc:
                raise InvalidSweepError(f"parameters.{name}: the objective cannot run with {value!r}: {exc}") from exc


def _did_you_mean(names: list[str], valid: Collection[str]) -> str:
    # "val_loss" -> "val/loss", "learnin_rate" -> "learning_rate": W&B names differ from ours by a separator.
    by_key = {name.replace("/", "_").replace(".", "_").lower(): name for name in valid}
    hints = []
    for name in names:
        match = by_key.get(name.replace("/", "_").replace(".", "_").lower()) or next(
            iter(difflib.get_close_matches(name, list(valid), n=1)), None)
        if match is not None:
            hints.append(f"{name!r} -> {match!r}")
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def finite(value: Any, metric: str) -> float:
    """The objective's return value as a float (a Python, NumPy or 0-d tensor number)."""
    try:
        number = float(value) if not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"objective: expected a finite number (the metric {metric!r}), received {value!r}")
    return number


@contextlib.contextmanager
def tracked_run(sweep_name: str, run_name: str, tracking: Mapping[str, Any], **overrides: Any) -> Iterator[Any]:
    """The tracked run of one trial (or of a sweep's summary), grouped under the sweep's name.

    An exception raised in the `with` body goes through the tracker's own `with`, so the run records how it
    ended.

    Args:
        sweep_name: The experiment and group of the run.
        run_name: The run's name (`<sweep>-trial007`).
        tracking: Extra `TrackingConfig` fields (`log_dir`, `use_wandb`, ...); they may replace the defaults.
        **overrides: Fields that win over `tracking` (the W&B engine turns the tracker's W&B off).
    """
    from ..config import TrackingConfig
    from ..tracker import AdvancedExperimentTracker

    settings = {"experiment_name": sweep_name, "group": sweep_name, "run_name": run_name, **tracking, **overrides}
    with AdvancedExperimentTracker(TrackingConfig(**settings)) as tracker:
        yield tracker


def run_trial(config: SweepConfig, objective: Objective, trial: optuna.Trial, *, track: bool = True,
              tracking: Mapping[str, Any] | None = None) -> float:
    """Run one trial as a tracked run: sample parameters, call the objective, log hparams and the metric.

    The run is `AdvancedExperimentTracker(TrackingConfig(experiment_name=<sweep>, group=<sweep>,
    run_name=<sweep>-trial<NNN>, **tracking))`; its hyperparameters and final metric go to
    `log_hyperparameters` (TensorBoard HParams, W&B config/summary), intermediate values to `log_metrics`.
    An objective that raises ends its run as failed and leaves its message in the trial's `error` user
    attribute (secrets redacted); a pruned trial's run ends normally.

    Args:
        config: The sweep config.
        objective: `objective(params, trial_context) -> float`.
        trial: The Optuna trial.
        track: False runs the objective without a tracked run (`TrialContext.tracker` is None).
        tracking: Extra `TrackingConfig` fields (`log_dir`, `use_wandb`, `wandb_mode`, ...).

    Returns:
        The objective's value.
    """
    import optuna

    try:
        return _run_trial(config, objective, trial, track, tracking or {})
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        from ..config import redact_text

        trial.set_user_attr("error", redact_text(f"{type(exc).__name__}: {exc}"))
        raise


def _run_trial(config: SweepConfig, objective: Objective, trial: optuna.Trial, track: bool,
               tracking: Mapping[str, Any]) -> float:
    import optuna

    params = sample_params(config, trial)
    trial.set_user_attr("params", params)  # readable values next to Optuna's raw ones (optuna-dashboard)
    if not track:
        ctx = TrialContext(trial.number, config.name, params, config.metric_name, optuna_trial=trial)
        return finite(objective(params, ctx), config.metric_name)

    run_name = f"{config.name}-trial{trial.number:03d}"
    trial.set_user_attr("run_name", run_name)
    pruned: optuna.TrialPruned | None = None
    with tracked_run(config.name, run_name, tracking) as tracker:  # an error goes through: the run failed
        ctx = TrialContext(trial.number, config.name, params, config.metric_name, optuna_trial=trial,
                           tracker=tracker)
        try:
            value = finite(objective(params, ctx), config.metric_name)
        except optuna.TrialPruned as exc:  # stopped early by the pruner: the run itself did not fail
            if ctx.last_value is not None:
                tracker.log_hyperparameters(params, metrics={config.metric_name: ctx.last_value})
            pruned = exc
        else:
            tracker.log_hyperparameters(params, metrics={config.metric_name: value})
    if pruned is not None:
        raise pruned
    return value
