"""Hyperparameter sweep of the example model: a W&B sweep YAML, run locally by Optuna or on W&B.

    python scripts/sweep.py --config sweeps/quick_grid.yaml
    python scripts/sweep.py --config sweeps/bayes_hyperband.yaml --count 12 --workers 2
    python scripts/sweep.py --config sweeps/bayes_hyperband.yaml --storage postgresql://me@db:5432/sweeps
    python scripts/sweep.py --config sweeps/quick_grid.yaml --engine wandb --project my-project

Swept parameters named like `TrainConfig` fields or their aliases (`lr`/`learning_rate`, `batch_size`,
`epochs`/`max_epochs`, `max_steps`, ...) set those; any other name is a model option (`width`, `n_layer`, ...);
everything else comes from the tiny CPU recipe in `models/sweep_recipe.py`. Each trial is a tracked run under
`<root>/<sweep>/` (`tensorboard --logdir=runs`), and `<root>/<sweep>/report.html` shows them best first with the
parallel coordinates and parameter importances (`--no-report` skips it); interrupting and running the same
command again resumes the sweep (`--fresh` starts it anew, keeping the old one). Exit status: 0 done (or already
complete), 1 every trial of this run failed or W&B is unreachable, 2 the sweep is invalid (nothing ran).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `models` when run from a checkout

from models.sweep_recipe import SweepRecipe  # noqa: E402
from opusclip_track.sweep import (  # noqa: E402
    InvalidSweepError,
    SweepConfig,
    SweepResult,
    TrialRecord,
    WandbUnavailableError,
    run_sweep,
    run_wandb_sweep,
)


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
    root: str = field(default="runs/sweeps", metadata={"help": "folder of the study, the trial runs, the plots"})
    seed: int = field(default=0, metadata={"help": "sampler seed (random/bayes)"})
    fresh: bool = field(default=False, metadata={
        "help": "start a new study under this name (the old one is kept as <name>-<date>), e.g. after "
                "changing the search space"})
    wandb: bool = field(default=False, metadata={
        "help": "also log each trial to W&B (offline without an API key); TensorBoard and the store always"})
    no_report: bool = field(default=False, metadata={
        "help": "skip the HTML report of the trial runs (<root>/<name>/report.html: trials best first, parallel "
                "coordinates, parameter importances, curves)"})
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
    args = Args(**vars(parser.parse_args(argv)))
    if not Path(args.config).is_file():
        parser.error(f"--config: expected a sweep YAML file, received {args.config!r} (no such file)")
    return args


def run(args: Args) -> SweepResult | None:
    """Run the sweep `args` describe; None for the W&B engine (its results are on the W&B server)."""
    config = SweepConfig.from_yaml(args.config)
    objective = SweepRecipe.for_config(config)
    tracking = {"use_wandb": args.wandb, "system_monitor_interval_s": 0.0}
    if args.engine == "wandb":
        sweep_id = run_wandb_sweep(config, objective, count=args.count, project=args.project,
                                   entity=args.entity, tracking=tracking)
        print(f"W&B sweep {sweep_id} done; join from other machines: wandb agent {sweep_id}")
        return None
    import optuna
    from tqdm import tqdm

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the bar and the summary say it
    bars: list[Any] = []  # made at the first finished trial: an already complete sweep shows none

    def on_trial_end(record: TrialRecord, finished: int, planned: int) -> None:
        if not bars:
            bars.append(tqdm(desc=f"sweep {config.name}", unit="trial"))
        bar = bars[0]
        bar.total = planned
        bar.set_postfix_str(f"#{record.number} {record.state} {config.metric_name}={record.value}")
        bar.update(1)

    try:
        return run_sweep(config, objective, count=args.count, workers=args.workers, storage=args.storage,
                         root=args.root, seed=args.seed, tracking=tracking, fresh=args.fresh,
                         on_trial_end=on_trial_end, report=not args.no_report)
    finally:
        for bar in bars:
            bar.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except InvalidSweepError as exc:  # nothing ran
        print(f"sweep: {exc}", file=sys.stderr)
        return 2
    except WandbUnavailableError as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 0
    print(result)
    for path in result.figures.values():
        print(f"plot: {path}")
    if result.figures:
        print(f"runs: tensorboard --logdir={Path(args.root) / result.name}")
    if result.report is not None:
        print(f"report: {result.report}")
    failure = result.failure()
    if failure is not None:
        print(f"sweep {result.name!r}: every trial of this run failed; the first, {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
