"""Train and evaluate VideoGenerationModel and TransformerModel on equal terms, then compare them.

Each model (and each seed) is its own run in one group; a summary run logs the comparison the way the
original API shows (`<ModelName>/val_loss`, `<ModelName>/training_time`, ...), a table (W&B Table and
TensorBoard text), a bar chart and the HParams view, and the table is printed.

    python scripts/compare_models.py                      # both models, seed 0, ~3 minutes on 2 CPU cores
    python scripts/compare_models.py --seeds 0 1 2        # mean and standard deviation over seeds
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from models.comparison import ComparisonConfig, compare_models
from models.training import TrainConfig


@dataclass
class Args:
    models: list[str] = field(default_factory=lambda: ["video_generation", "transformer"])
    seeds: list[int] = field(default_factory=lambda: [0])
    max_steps: int = 150
    batch_size: int = 8
    image_size: int = 32
    eval_every: int = 50
    device: str = "auto"
    group: str | None = None
    log_dir: str = "runs"
    checkpoint_dir: str = "checkpoints"
    no_wandb: bool = False


def parse_args() -> Args:
    defaults = Args()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=defaults.models, choices=["video_generation", "transformer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=defaults.seeds)
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--group", default=defaults.group, help="run group (default: generated)")
    parser.add_argument("--log-dir", default=defaults.log_dir)
    parser.add_argument("--checkpoint-dir", default=defaults.checkpoint_dir)
    parser.add_argument("--no-wandb", action="store_true")
    return Args(**{f.name: getattr(parser.parse_args(), f.name) for f in dataclasses.fields(Args)})


def main() -> None:
    args = parse_args()
    train = TrainConfig(max_steps=args.max_steps, batch_size=args.batch_size, image_size=args.image_size,
                        eval_every=args.eval_every, device=args.device, metrics=("psnr", "ssim", "flicker"))
    config = ComparisonConfig(models=args.models, seeds=args.seeds, train=train, group=args.group,
                              log_dir=args.log_dir, checkpoint_dir=args.checkpoint_dir, use_wandb=not args.no_wandb)
    comparison = compare_models(config, on_run=lambda model, seed, run: print(
        f"{model} seed {seed}: val/loss {run['val/loss']:.4g}, psnr {run.get('video/psnr', float('nan')):.2f} dB, "
        f"{run['train_time_s']:.0f} s", flush=True))
    print(comparison.format_table())
    print(f"\nruns of group {comparison.group!r} under {args.log_dir}/; compare them with: "
          f"tensorboard --logdir={args.log_dir}")


if __name__ == "__main__":
    main()
