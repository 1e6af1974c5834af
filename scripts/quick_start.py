"""Quick start: train a small video-prediction model on synthetic clips and track everything.

With no arguments (about two minutes on 2 CPU cores) it trains `VideoGenerationModel` on bouncing shapes and
logs to `runs/` (TensorBoard, and W&B offline unless an API key is set): losses, learning rate, gradient
norm, PSNR/SSIM/flicker, sample clips, system load and hyperparameters; checkpoints go to `checkpoints/`.

    python scripts/quick_start.py                          # the defaults below
    python scripts/quick_start.py --model transformer --steps 1000 --device cuda
    python scripts/quick_start.py --config my_run.yaml     # YAML with `tracking:` and `train:` sections
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.training import TrainConfig, build_model_for, tracking_settings, train
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig


@dataclass
class Args:
    """The script's settings; every one is a flag (`--max-steps 300`)."""

    model: str = "video_generation"
    epochs: int = 4  # 4 x 256 steps of 8 clips: about 1.5 minutes on 2 idle CPU cores
    max_steps: int = 1000
    batch_size: int = 8
    image_size: int = 64
    eval_every: int = 200
    device: str = "auto"
    experiment_name: str = "quick-start"
    config: str | None = None
    no_wandb: bool = False
    log_dir: str = "runs"
    checkpoint_dir: str = "checkpoints"


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", help="TensorBoard only, no W&B")
        else:
            kind = int if f.type == "int" else str
            parser.add_argument(flag, type=kind, default=f.default, help=f"default: {f.default}")
    parser.set_defaults(model="video_generation")
    namespace = parser.parse_args(argv)
    if namespace.model not in ("video_generation", "transformer"):
        parser.error(f"--model: expected video_generation or transformer, received {namespace.model!r}")
    return Args(**vars(namespace))


def build_configs(args: Args) -> tuple[TrackingConfig, TrainConfig]:
    """Flags, overridden by the YAML file's `tracking:` and `train:` sections when `--config` is given.

    A recipe field set in `tracking:` (`learning_rate`, `batch_size`, `max_epochs`, `device`, ...) is what the
    run uses; `train:` giving the same setting another value is an error (`SystemExit` naming both).
    """
    tracking: dict[str, Any] = {"experiment_name": args.experiment_name, "use_wandb": not args.no_wandb,
                                "log_dir": args.log_dir, "checkpoint_dir": args.checkpoint_dir,
                                "checkpoint_monitor": "val/loss", "tags": ["quick-start", args.model]}
    training: dict[str, Any] = {"model": args.model, "epochs": args.epochs, "max_steps": args.max_steps,
                                "batch_size": args.batch_size, "image_size": args.image_size,
                                "eval_every": args.eval_every, "device": args.device,
                                "metrics": ("psnr", "ssim", "flicker", "lpips", "fid", "fvd")}
    train_section: dict[str, Any] = {}
    if args.config:
        data = yaml.safe_load(Path(args.config).read_text()) or {}
        unknown = sorted(set(data) - {"tracking", "train"})
        if unknown:
            raise SystemExit(f"--config: expected sections 'tracking' and 'train', received {unknown}")
        tracking.update(data.get("tracking") or {})
        train_section = data.get("train") or {}
    try:
        train_section = TrainConfig.resolve_aliases(train_section)
        tracking.setdefault("seed", train_section.get("seed", 0))
        tracking_config = TrackingConfig.from_dict(tracking)
        # The YAML's tracking section beats the flags, as its train section does.
        flags = {k: v for k, v in training.items() if k not in tracking_settings(tracking_config)}
        return tracking_config, TrainConfig.from_dict({**flags, **train_section}, tracking=tracking_config)
    except (TypeError, ValueError) as error:  # a bad setting: one line naming it, not a traceback
        raise SystemExit(f"quick_start: {error}") from error


def report(tracker: AdvancedExperimentTracker, results: dict[str, float]) -> str:
    """What was logged, where, and the commands to look at it."""
    store = RunStore(tracker.run_dir)
    keys = store.keys()
    groups = sorted({k.split("/")[0] for k in keys})
    videos = store.events("video")
    best = tracker.checkpoints.best
    lines = [
        f"\nrun {tracker.run_name}: {len(keys)} scalar series ({', '.join(groups)}), {store.num_scalars()} points",
        f"  final: val/loss {results['val/loss']:.4g}, video/psnr {results.get('video/psnr', float('nan')):.2f} dB,"
        f" video/ssim {results.get('video/ssim', float('nan')):.3f} after {int(results['steps'])} steps"
        f" ({results['train_time_s']:.0f} s)",
        f"  {len(videos)} sample clips (GIF in TensorBoard, MP4 in {tracker.run_dir / 'media'})",
        f"  best checkpoint: {best.path if best else 'none'}",
        f"  local store: {store.path}",
        "\nlook at it:",
        f"  tensorboard --logdir={tracker.config.log_dir}",
    ]
    offline = sorted((tracker.run_dir / "wandb").glob("offline-run-*"))
    if offline:
        lines.append(f"  wandb sync {offline[-1]}")
    lines.append(f"  opusclip-track runs --log-dir {tracker.config.log_dir} show {tracker.run_name}")
    store.close()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tracking, training = build_configs(args)
    with AdvancedExperimentTracker(tracking) as tracker:
        print(f"run {tracker.run_name} -> {tracker.run_dir}")
        results = train(build_model_for(training), training, tracker, progress=True)
        tracker.log_performance_metrics()
    print(report(tracker, results))


if __name__ == "__main__":
    main()
