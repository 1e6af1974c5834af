"""Quick start: a short loop that logs through the tracker (the full training job replaces this soon)."""

from __future__ import annotations

import argparse
import math

from opusclip_track import AdvancedExperimentTracker, TrackingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--no-wandb", action="store_true")
    args = parser.parse_args()
    config = TrackingConfig(experiment_name="quick-start", use_wandb=not args.no_wandb)
    with AdvancedExperimentTracker(config) as tracker:
        for step in range(args.steps):
            tracker.log_metrics({"train/loss": math.exp(-step / 50)}, step=step)
    print(f"logged {args.steps} steps to {tracker.run_dir}; view with: tensorboard --logdir=runs")


if __name__ == "__main__":
    main()
