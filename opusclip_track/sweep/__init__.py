"""Hyperparameter sweeps: a W&B sweep config, run locally by Optuna or on the W&B sweep server.

The config is the W&B sweep schema (`method`, `metric`, `parameters`, `early_terminate`, `run_cap`, ...), so
one YAML file drives both engines:

- `run_sweep` (local, no account): Optuna. `grid` -> `GridSampler`, `random` -> `RandomSampler(seed)`,
  `bayes` -> `TPESampler(seed)`, hyperband -> `HyperbandPruner`. The study lives in an SQLite file
  (`runs/sweeps/<name>.db`) or any SQLAlchemy URL (`postgresql://...`), so an interrupted sweep resumes,
  `workers=N` processes share it on one machine, and machines share it through a database server.
- `run_wandb_sweep` (online): `wandb.sweep` + `wandb.agent` with the config passed through unchanged. It
  writes no HTML report: the sweep's state (every agent's trials, the runs the server stopped early) is on the
  W&B server, whose sweep page shows it; this agent's trial runs alone would pass for the whole sweep.

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

Modules, one concept each (as Optuna lays out `study/` and `storages/`): `config` (the W&B schema, parsed),
`distributions` (W&B distributions <-> Optuna suggestions), `trial` (what an objective receives, the tracked
trial run), `results` (the summary and its plots), `_study` (storage, sampler, pruner), `_grid` (grid and
run-cap bookkeeping), `local` + `_workers` (the Optuna engine and its worker processes), `wandb_agent` (the
W&B engine).
"""

from __future__ import annotations

from ._study import sweep_storage_url
from .config import HyperbandSpec, InvalidSweepError, MetricSpec, ParameterSpec, SweepConfig
from .distributions import decode_params, sample_params
from .local import run_sweep
from .results import SweepResult, TrialRecord, summarize, write_report
from .trial import Objective, TrialContext, check_declared, run_trial
from .wandb_agent import WandbUnavailableError, run_wandb_sweep

__all__ = ["HyperbandSpec", "InvalidSweepError", "MetricSpec", "Objective", "ParameterSpec", "SweepConfig",
           "SweepResult", "TrialContext", "TrialRecord", "WandbUnavailableError", "check_declared", "decode_params",
           "run_sweep", "run_trial", "run_wandb_sweep", "sample_params", "summarize", "sweep_storage_url",
           "write_report"]
