"""Hyperparameter sweep of the example model: a W&B sweep YAML, run locally by Optuna or on W&B.

    python scripts/sweep.py --config sweeps/quick_grid.yaml
    python scripts/sweep.py --config sweeps/bayes_hyperband.yaml --count 12 --workers 2
    python scripts/sweep.py --config sweeps/bayes_hyperband.yaml --storage postgresql://me@db:5432/sweeps
    python scripts/sweep.py --config sweeps/quick_grid.yaml --engine wandb --project my-project

Swept parameters named like `TrainConfig` fields (`lr`, `batch_size`, `max_steps`, ...) set those; any
other name is a model option (`width`, `n_layer`, ...). Everything else comes from the tiny CPU recipe
below. Each trial is a tracked run under `<root>/<sweep>/` (`tensorboard --logdir=runs`); interrupting and
running the same command again resumes the sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `models` when run from a checkout

from opusclip_track.sweep import (  # noqa: E402
    SweepConfig,
    TrialContext,
    TrialRecord,
    run_sweep,
    run_wandb_sweep,
)

# The recipe every trial starts from: small enough for a CPU (16x16 frames, 2 + 2 frames, PSNR only).
BASE_RECIPE: dict[str, Any] = {
    "model": "video_generation", "image_size": 16, "context_frames": 2, "future_frames": 2,
    "train_clips": 128, "val_clips": 8, "batch_size": 8, "epochs": 100, "max_steps": 12, "eval_every": 3,
    "log_every": 3, "warmup_steps": 2, "metrics": ("psnr",), "sample_clips": 1, "device": "auto",
    "model_options": {"width": 8, "num_res_blocks": 1},
}


@dataclass
class Args:
    config: str = field(metadata={"help": "W&B sweep YAML file"})
    count: int | None = field(default=None, metadata={
        "help": "trials to run in this call (default: the whole grid, or up to run_cap)"})
    workers: int = field(default=1, metadata={"help": "worker processes sharing the study on this machine"})
    engine: Literal["optuna", "wandb"] = field(default="optuna", metadata={
        "help": "optuna: local, no account; wandb: the W&B sweep server (needs an API key)"})
    storage: str | None = field(default=None, metadata={
        "help": "study storage URL shared by machines, e.g. postgresql://me@db:5432/sweeps "
                "(default: SQLite under --root)"})
    root: str = field(default="runs/sweeps", metadata={"help": "folder of the study, the trial runs, the plot"})
    seed: int = field(default=0, metadata={"help": "sampler seed (random/bayes)"})
    wandb: bool = field(default=False, metadata={
        "help": "also log each trial to W&B (offline without an API key); TensorBoard and the store always"})
    project: str | None = field(default=None, metadata={"help": "W&B project (engine wandb)"})
    entity: str | None = field(default=None, metadata={"help": "W&B entity (engine wandb)"})


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", help=help_text)
        elif f.name == "engine":
            parser.add_argument(flag, choices=["optuna", "wandb"], default=f.default, help=help_text)
        elif f.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=help_text)
        else:
            kind = int if f.type.startswith("int") else str
            parser.add_argument(flag, type=kind, default=f.default, help=help_text)
    return Args(**vars(parser.parse_args(argv)))


def train_config(params: dict[str, Any]) -> Any:
    """`TrainConfig` for one trial: the base recipe, swept `TrainConfig` fields, the rest as model options."""
    from models.training import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe = {**BASE_RECIPE, "model_options": dict(BASE_RECIPE["model_options"])}
    for name, value in params.items():
        if name in fields:
            recipe[name] = value
        else:
            recipe["model_options"][name] = value
    return TrainConfig(**recipe)


def train_trial(params: dict[str, Any], trial: TrialContext) -> float:
    """One trial: train the example model; `val/loss` at each evaluation feeds hyperband."""
    from models.training import build_model_for, train

    cfg = train_config(params)
    results = train(build_model_for(cfg), cfg, trial.reporting_tracker(), checkpoints=False)
    return results[trial.metric_name]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = SweepConfig.from_yaml(args.config)
    tracking = {"use_wandb": args.wandb, "system_monitor_interval_s": 0.0}
    if args.engine == "wandb":
        sweep_id = run_wandb_sweep(config, train_trial, count=args.count, project=args.project,
                                   entity=args.entity, tracking=tracking)
        print(f"W&B sweep {sweep_id} done; join from other machines: wandb agent {sweep_id}")
        return
    import optuna
    from tqdm import tqdm

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the bar and the summary say it
    bar = tqdm(desc=f"sweep {config.name}", unit="trial")

    def on_trial_end(record: TrialRecord, finished: int, planned: int) -> None:
        bar.total = planned
        bar.set_postfix_str(f"#{record.number} {record.state} {config.metric_name}={record.value}")
        bar.update(1)

    result = run_sweep(config, train_trial, count=args.count, workers=args.workers, storage=args.storage,
                       root=args.root, seed=args.seed, tracking=tracking, on_trial_end=on_trial_end)
    bar.close()
    print(result)
    if result.plot_path is not None:
        print(f"plot: {result.plot_path}\nruns: tensorboard --logdir={Path(args.root) / config.name}")


if __name__ == "__main__":
    main()
