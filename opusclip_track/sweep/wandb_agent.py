"""The W&B engine: the sweep config passed unchanged to the W&B sweep server, trials run by `wandb.agent`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._checks import argument_error, is_int
from .config import SweepConfig, SweepSource, invalid_sweep
from .trial import Objective, TrialContext, check_declared, check_objective, finite, resolve_objective, tracked_run


class WandbUnavailableError(RuntimeError):
    """The W&B engine cannot reach the W&B sweep server: no API key, or W&B set offline. No trial ran."""


def _require_wandb_online() -> None:
    from ..backends.wandb import api_key_configured

    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise WandbUnavailableError(f"engine 'wandb': expected W&B online (sweeps run on the W&B server), received "
                                    f"WANDB_MODE={mode!r}; unset it, or use the local engine (run_sweep, "
                                    "--engine optuna)")
    if not api_key_configured():
        raise WandbUnavailableError("engine 'wandb': expected a W&B API key (WANDB_API_KEY or `wandb login`), "
                                    "found none; log in, or use the local engine (run_sweep, --engine optuna), "
                                    "which needs no account")


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

        from ..backends.wandb import finish_run, use_step_axis, wandb_settings

        name, metric = self.config.name, self.config.metric_name
        # The W&B backend's settings (no argv/metadata/code capture) and its true-step x-axis.
        with wandb.init(group=name, settings=wandb_settings()) as run:
            use_step_axis(run)
            params = dict(run.config)
            with tracked_run(name, f"{name}-{run.id}", self.tracking, use_wandb=False) as tracker:
                ctx = TrialContext(self.number, name, params, metric, tracker=tracker, wandb_run=run)
                self.number += 1
                value = finite(self.objective(params, ctx), metric)
                tracker.log_hyperparameters(params, metrics={metric: value})
            run.summary[metric] = value
            finish_run(run, 0)  # its .wandb file complete before the agent starts the next trial


def run_wandb_sweep(config: SweepSource, objective: Objective | str,
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

    Raises:
        InvalidSweepError: the config, `count` or the objective's declared names disagree; no trial ran.
        WandbUnavailableError: no API key, or `WANDB_MODE` offline/disabled.
    """
    with invalid_sweep():
        cfg = SweepConfig.coerce(config)
        if count is not None and (not is_int(count) or count <= 0):
            raise argument_error("count", "a positive integer or None", count)
    _require_wandb_online()
    import wandb

    with invalid_sweep():
        fn = resolve_objective(check_objective(objective, 1))
        check_declared(cfg, fn)
    sweep_id: str = wandb.sweep(cfg.to_dict(), project=project, entity=entity)
    wandb.agent(sweep_id, function=_WandbTrial(cfg, fn, dict(tracking or {})), count=count, project=project,
                entity=entity)
    return sweep_id
