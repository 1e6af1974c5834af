"""Train several example models with the same data, seeds and budget, and log their comparison.

Each (model, seed) is its own tracked run in one group, with its hyperparameters (logged once, by `train`)
beside its metrics in TensorBoard's HParams view and W&B's runs table; a `<group>-summary` run logs the
comparison (`<ModelName>/val_loss`, `<ModelName>/training_time`, ..., a table and a bar chart). Used by
`scripts/compare_models.py`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from models import MODELS
from models.training import TrainConfig, build_model_for, train
from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.compare import ModelComparison, log_comparison, summarize

COMPARED_METRICS = ["val_loss", "video/psnr", "video/ssim", "training_time", "num_parameters"]


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
    return comparison
