"""Train several example models with the same data, seeds and budget, and log their comparison.

Each (model, seed) is its own tracked run in one group, with its hyperparameters (logged once, by `train`)
beside its metrics in TensorBoard's HParams view and W&B's runs table; a `<group>-summary` run logs the
comparison (`<ModelName>/val_loss`, `<ModelName>/training_time`, ..., a table and a bar chart), and an offline
HTML report of the runs grouped by model (`<log_dir>/<group>/report.html`, every number in `stats.json`) adds
curves, per-frame quality, clips in lock-step and statistics over seeds. Used by `scripts/compare_models.py`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models import MODELS
from models.training import TrainConfig, build_model_for, train
from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.compare import ModelComparison, log_comparison, summarize

COMPARED_METRICS = ["val_loss", "video/psnr", "video/ssim", "training_time", "num_parameters"]
# The report's keys: its defaults (train/loss, val/loss, video/*) and the training time, as compared above.
REPORT_KEYS = ("train/loss", "val/loss", "video/*", "train/time_s")


@dataclass
class ComparisonConfig:
    """What to compare and how: every model trains by `train` with each seed."""

    models: list[str] = field(default_factory=lambda: ["video_generation", "transformer"])
    seeds: list[int] = field(default_factory=lambda: [0])
    train: TrainConfig = field(default_factory=TrainConfig)
    group: str | None = None
    experiment_name: str = "compare-models"
    log_dir: str = "runs"
    checkpoint_dir: str = "checkpoints"
    use_wandb: bool = True
    progress: bool = True  # a progress bar per run on stderr, labelled with the model and seed
    report: bool = True  # write report_path(log_dir, group) and stats.json beside it at the end
    command: str | None = None  # the command line that ran the comparison, shown in the report


def compare_models(cfg: ComparisonConfig,
                   on_run: Callable[[str, int, dict[str, float]], None] | None = None) -> ModelComparison:
    """Train every model with every seed, then log and return the comparison (mean, std over seeds).

    Args:
        cfg: models, seeds, the shared training recipe and where to log.
        on_run: called after each run with (model class name, seed, its results), e.g. for a progress line.
    """
    group = cfg.group or f"{cfg.experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    label_width = max(len(MODELS[name][1].__name__) for name in cfg.models)
    results: dict[str, list[dict[str, float]]] = {}
    run_dirs: list[Path] = []
    for model_name in cfg.models:
        class_name = MODELS[model_name][1].__name__  # VideoGenerationModel, TransformerModel
        for seed in cfg.seeds:
            train_cfg = dataclasses.replace(cfg.train, model=model_name, seed=seed)  # type: ignore[arg-type]
            tracking = TrackingConfig(experiment_name=cfg.experiment_name, group=group, seed=seed,
                                      run_name=f"{group}-{model_name}-seed{seed}", log_dir=cfg.log_dir,
                                      checkpoint_dir=cfg.checkpoint_dir, use_wandb=cfg.use_wandb,
                                      tags=["compare", model_name], checkpoint_monitor="val/loss")
            model = build_model_for(train_cfg)
            # `train` logs the hyperparameters (model, seed, lr, batch_size, total_steps, ...) once; TensorBoard's
            # HParams view and W&B's runs table put them beside the run's last `val/loss`, `video/*`, ... values.
            label = f"{class_name:<{label_width}} seed {seed}"
            with AdvancedExperimentTracker(tracking) as tracker:
                run = train(model, train_cfg, tracker, progress=label if cfg.progress else False)
                run = {**run, "val_loss": run["val/loss"], "training_time": run["train_time_s"],
                       "num_parameters": float(model.num_parameters())}
            run_dirs.append(tracker.run_dir)
            results.setdefault(class_name, []).append(run)
            if on_run is not None:
                on_run(class_name, seed, run)
    comparison = summarize(results, COMPARED_METRICS, group)
    summary = TrackingConfig(experiment_name=cfg.experiment_name, group=group, run_name=f"{group}-summary",
                             log_dir=cfg.log_dir, checkpoint_dir=cfg.checkpoint_dir, use_wandb=cfg.use_wandb,
                             tags=["compare", "summary"], system_monitor_interval_s=0.0)
    with AdvancedExperimentTracker(summary) as tracker:
        log_comparison(tracker, comparison)
        tracker.log_text("comparison/summary", f"```\n{comparison.format_table()}\n```")
    if cfg.report:
        write_report(run_dirs, report_path(cfg.log_dir, group), title=f"{group}: {', '.join(results)} over "
                     f"seeds {', '.join(map(str, cfg.seeds))}", command=cfg.command)
    return comparison


def report_path(log_dir: str | Path, group: str) -> Path:
    """Where `compare_models` writes the report of a group's runs: `<log_dir>/<group>/report.html`."""
    return Path(log_dir) / group / "report.html"


def write_report(run_dirs: Sequence[str | Path], out: str | Path, *, title: str | None = None,
                 command: str | None = None) -> Path:
    """The offline HTML report of compared runs, grouped by model (`train.model`), with every number in
    `stats.json` beside it: the same final values `summarize` compares (`val/loss`, `video/*`, `train/time_s`),
    plus 95% intervals, Welch's t-test and Hedges' g between models. Returns the page's path."""
    from opusclip_track.report.build import build_report

    out = Path(out)
    return build_report([str(d) for d in run_dirs], out, keys=REPORT_KEYS, group_by="train.model",
                        json_path=out.with_name("stats.json"), title=title, command=command).html
