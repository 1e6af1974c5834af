"""Train and evaluate VideoGenerationModel and TransformerModel on equal terms, then compare them.

Each model (and each seed) is its own run in one group; a summary run logs the comparison the way the
original API shows (`<ModelName>/val_loss`, `<ModelName>/training_time`, ...), a table (W&B Table and
TensorBoard text), a bar chart and the HParams view, and the table is printed.

    python scripts/compare_models.py                      # both models, seed 0, ~3 minutes on 2 CPU cores
    python scripts/compare_models.py --seeds 0 1 2        # mean and standard deviation over seeds
    python scripts/compare_models.py --seeds 0 1 --no-report

At the end it writes an offline HTML report of the runs grouped by model, `<log-dir>/<group>/report.html`
(curves, per-frame quality, clips in lock-step, 95% intervals and Welch's t-test over seeds; every number in
`stats.json` beside it), and prints where it is; `--no-report` skips it. Each run shows a progress bar on stderr
while it trains. Run it from a checkout: the example models live in
the repository's `models/`, not in the installed package.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `models` (not installed) from this checkout

from models import MODELS  # noqa: E402
from models.comparison import ComparisonConfig, compare_models, report_path  # noqa: E402
from models.training import TrainConfig, resolve_device  # noqa: E402
from opusclip_track.config import redact_argv  # noqa: E402


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
    no_report: bool = False


def parse_args(argv: list[str] | None = None) -> Args:
    defaults = Args()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=defaults.models, choices=sorted(MODELS))
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
    parser.add_argument("--no-report", action="store_true",
                        help="skip the HTML report (<log-dir>/<group>/report.html and stats.json)")
    namespace = parser.parse_args(argv)
    return Args(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(Args)})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:  # a bad setting or a device this machine lacks: one line, before any run starts
        train = TrainConfig(max_steps=args.max_steps, batch_size=args.batch_size, image_size=args.image_size,
                            eval_every=args.eval_every, device=args.device, metrics=("psnr", "ssim", "flicker"))
        resolve_device(train.device, "--device")
    except ValueError as error:
        raise SystemExit(f"compare_models: {error}") from error
    command = shlex.join(["python", "scripts/compare_models.py", *redact_argv(sys.argv[1:] if argv is None else argv)])
    config = ComparisonConfig(models=args.models, seeds=args.seeds, train=train, group=args.group,
                              log_dir=args.log_dir, checkpoint_dir=args.checkpoint_dir, use_wandb=not args.no_wandb,
                              report=not args.no_report, command=command)
    comparison = compare_models(config, on_run=lambda model, seed, run: print(
        f"{model} seed {seed}: val/loss {run['val/loss']:.4g}, psnr {run.get('video/psnr', float('nan')):.2f} dB, "
        f"{run['train_time_s']:.0f} s", flush=True))
    print(comparison.format_table())
    print(f"\nruns of group {comparison.group!r} under {args.log_dir}/; compare them with: "
          f"tensorboard --logdir={args.log_dir}")
    if config.report:
        report = report_path(args.log_dir, str(comparison.group))
        print(f"report: {report} (every number in {report.with_name('stats.json')})")


if __name__ == "__main__":
    main()
