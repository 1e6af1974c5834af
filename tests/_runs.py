"""A small tracked run for the command-line and sync tests: five steps of two scalars, a text and hyperparameters."""

from __future__ import annotations

from pathlib import Path

from opusclip_track import AdvancedExperimentTracker, TrackingConfig


def make_run(runs_dir: Path, name: str, loss: float, **overrides: object) -> Path:
    """Write run `name` under `runs_dir` (TensorBoard only) with `train/loss` = loss + step; returns its dir."""
    options: dict[str, object] = {"experiment_name": "cli", "log_dir": str(runs_dir), "use_wandb": False,
                                  "run_name": name, "system_monitor_interval_s": 0.0}
    options.update(overrides)
    with AdvancedExperimentTracker(TrackingConfig(**options)) as tracker:  # type: ignore[arg-type]
        for step in range(5):
            tracker.log_metrics({"train/loss": loss + step, "video/psnr": 20.0 + step}, step=step)
        tracker.log_text("note", "hello", step=1)
        tracker.log_hyperparameters({"lr": 0.01})
    return tracker.run_dir
