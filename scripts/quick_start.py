"""Quick start: train a small video-prediction model on synthetic clips and track everything.

With no arguments (about two minutes on 2 CPU cores) it trains `VideoGenerationModel` on bouncing shapes and
logs to `runs/` (TensorBoard, and W&B offline unless an API key is set): losses, learning rate, gradient
norm, PSNR/SSIM/flicker, sample clips, system load and hyperparameters; checkpoints go to `checkpoints/`.

    python scripts/quick_start.py                          # the defaults below
    python scripts/quick_start.py --model transformer --max-steps 1000 --device cuda
    python scripts/quick_start.py --config my_run.yaml     # YAML with `tracking:` and `train:` sections

Run it from a checkout: the example models live in the repository's `models/`, not in the installed package.
A bad setting (a misspelled `train:` key, a device this machine lacks, an unreadable config file) stops it
with one line naming the setting, exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `models` (not installed) from this checkout

from models import MODELS  # noqa: E402
from models.training import TrainConfig, build_model_for, resolve_device, tracking_settings, train  # noqa: E402
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig  # noqa: E402


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
        elif f.name == "model":
            parser.add_argument(flag, choices=sorted(MODELS), default=f.default, help=f"default: {f.default}")
        else:
            kind = int if f.type == "int" else str
            parser.add_argument(flag, type=kind, default=f.default, help=f"default: {f.default}")
    return Args(**vars(parser.parse_args(argv)))


def read_config_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `tracking:` and `train:` sections of the YAML file `path` (empty when absent).

    Raises:
        SystemExit: one line naming the file and what is wrong with it (unreadable, not YAML, not a mapping,
            an unknown section, a section that is not a mapping).
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise SystemExit(f"--config: expected a readable YAML file, received {path!r} ({error.strerror})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SystemExit(f"--config: expected valid YAML in {path!r}, received {problem}{where}") from error
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise SystemExit(f"--config: expected a mapping with sections 'tracking' and 'train' in {path!r}, "
                         f"received a {type(data).__name__}")
    unknown = sorted(str(k) for k in set(data) - {"tracking", "train"})
    if unknown:
        raise SystemExit(f"--config: expected sections 'tracking' and 'train' in {path!r}, received {unknown}")
    sections = []
    for name in ("tracking", "train"):
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise SystemExit(f"--config: expected section {name!r} of {path!r} to be a mapping of settings, "
                             f"received a {type(section).__name__}")
        sections.append(section)
    return sections[0], sections[1]


def build_configs(args: Args) -> tuple[TrackingConfig, TrainConfig]:
    """Flags, overridden by the YAML file's `tracking:` and `train:` sections when `--config` is given.

    A recipe field set in `tracking:` (`learning_rate`, `batch_size`, `max_epochs`, `device`, ...) is what the
    run uses; `train:` giving the same setting another value is an error (`SystemExit` naming both), as is
    any bad setting or a device this machine does not have: all before a run is created.
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
        tracking_section, train_section = read_config_file(args.config)
        tracking.update(tracking_section)
        try:
            train_section = TrainConfig.resolve_aliases(train_section)
        except ValueError as error:  # a misspelled key: the message lists the valid names
            raise SystemExit(f"--config: section 'train' of {args.config!r}: {error}") from error
    try:
        tracking.setdefault("seed", train_section.get("seed", 0))
        tracking_config = TrackingConfig.from_dict(tracking)
        # The YAML's tracking section beats the flags, as its train section does.
        flags = {k: v for k, v in training.items() if k not in tracking_settings(tracking_config)}
        train_config = TrainConfig.from_dict({**flags, **train_section}, tracking=tracking_config)
        resolve_device(train_config.device, "device")  # here, before a run directory is made for nothing
    except (TypeError, ValueError) as error:  # a bad setting: one line naming it, not a traceback
        raise SystemExit(f"quick_start: {error}") from error
    return tracking_config, train_config


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
        f"  {len(videos)} sample videos, one per evaluation (GIF in TensorBoard, MP4 in {tracker.run_dir / 'media'})",
        f"  best checkpoint: {best.path if best else 'none'}",
        f"  local store: {store.path}",
        "\nlook at it:",
        f"  tensorboard --logdir={tracker.config.log_dir}",
    ]
    # A resumed run has one offline folder per session; `wandb sync` uploads them in start order.
    offline = sorted((tracker.run_dir / "wandb").glob("offline-run-*"))
    if offline:
        lines.append(f"  wandb sync {' '.join(str(path) for path in offline)}")
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
