"""Runs for the report tests, written by the real tracker: 2 groups x 3 seeds plus one failed run.

Each run logs 40 steps of `train/loss`, `val/loss` every 5 steps, `evaluate_videos` at steps 10 and 39 (PSNR,
SSIM and flicker plus the `video/per_frame` table), one clip with its reference at steps 10 and 39 (8 frames of
16x16, 8 fps) and a system sample. The clips are built so a screenshot tells which frame is shown: every pixel
of frame t of the reference is the gray level `frame_level(t)`, and the generated clip is that level plus noise
that grows with t (so the per-frame PSNR falls along the horizon). The transformer group's noise is smaller:
it wins on PSNR and SSIM. The failed run diverges (NaN loss) and carries two alerts, raised by `tracker.alert`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from opusclip_track import AdvancedExperimentTracker, TrackingConfig

GROUPS = {"transformer": 0.05, "unet": 0.08}  # noise scale of the generated clip
SEEDS = (0, 1, 2)
FRAMES, SIZE, FPS = 8, 16, 8.0
STEPS = 40
FAILED = "unet-diverged"


def frame_level(t: int) -> int:
    """The gray level (0-255) of every reference pixel in frame t."""
    return 20 + 30 * t


def run_name(group: str, seed: int) -> str:
    return f"{group}-s{seed}"


def _clips(noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    levels = torch.tensor([frame_level(t) / 255.0 for t in range(FRAMES)]).view(1, FRAMES, 1, 1, 1)
    reference = levels.expand(1, FRAMES, 3, SIZE, SIZE).contiguous()
    growth = torch.linspace(0.5, 2.0, FRAMES).view(1, FRAMES, 1, 1, 1)
    generated = (reference + noise * growth * torch.randn(reference.shape, generator=gen)).clamp(0, 1)
    return generated, reference


def _write_run(log_dir: Path, name: str, group: str, noise: float, seed: int, *, fail: bool = False) -> None:
    config = TrackingConfig(experiment_name="report-test", run_name=name, group=group, log_dir=str(log_dir),
                            checkpoint_dir=str(log_dir.parent / "checkpoints"), use_wandb=False,
                            system_monitor_interval_s=0, seed=seed, checkpoint_monitor="val/loss",
                            # the failed run's alerts are the two below (one with markup, for the escaping test):
                            # the rules would add their own NaN alert
                            alerts=not fail)
    rng = np.random.default_rng(seed + (100 if group == "unet" else 0))
    tracker = AdvancedExperimentTracker(config)
    tracker.log_hyperparameters({"model": group, "lr": 3e-4 if group == "transformer" else 1e-3, "seed": seed})
    for step in range(STEPS):
        loss = (0.5 + noise) * math.exp(-step / 8) + 0.02 * rng.random()
        if fail and step >= 12:
            loss = math.nan
        tracker.log_metrics({"train/loss": loss}, step=step)
        if fail and step in (11, 12):
            _raise_alert(tracker, step)
        if step % 5 == 4:
            tracker.log_metrics({"val/loss": loss * 1.1}, step=step)
        if fail and step == 13:
            break
        if step in (10, STEPS - 1):
            generated, reference = _clips(noise, seed * 1000 + step)
            tracker.evaluate_videos(generated, reference, step=step)
            tracker.log_video(generated, "samples/prediction", step=step, fps=FPS, reference=reference,
                              caption=f"{group} seed {seed}")
    if not fail:
        tracker.save_checkpoint(torch.nn.Linear(2, 2), metrics={"val/loss": loss * 1.1}, step=STEPS - 1)
    tracker.log_performance_metrics()
    tracker.close(status="failed" if fail else "finished")


def _raise_alert(tracker: AdvancedExperimentTracker, step: int) -> None:
    if step == 11:
        tracker.alert("loss spike", "train/loss 9.1 is 14 robust deviations above its recent window", step=step)
    else:
        tracker.alert("NaN loss", "train/loss is NaN at step 12 <b>", level="error", step=step)


def write_runs(root: Path) -> Path:
    """Write the runs under `root/runs` once (later calls reuse them); returns the log dir."""
    log_dir = root / "runs"
    done = root / "runs.done"
    if done.exists():
        return log_dir
    for group, noise in GROUPS.items():
        for seed in SEEDS:
            _write_run(log_dir, run_name(group, seed), group, noise, seed)
    _write_run(log_dir, FAILED, "unet", GROUPS["unet"], 7, fail=True)
    done.touch()
    return log_dir
