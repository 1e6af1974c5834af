"""The scripts `tests/test_torchrun.py` launches on two processes, and the clips and metrics they share with it.

    torchrun --nproc_per_node 2 tests/_torchrun_scripts.py torchrun OUT WEIGHTS_DIR
    RANK=r WORLD_SIZE=2 MASTER_ADDR=... MASTER_PORT=... python tests/_torchrun_scripts.py launcher OUT

`torchrun`: the training script a user would write, on a gloo group on the CPU: a tracker created before
`init_process_group` and one after (generated names), logging on every rank, `reduce_mean`, the metric classes over
each rank's shard of the clips, checkpoints saved and loaded on every rank (sync and async), the system monitor.
`launcher`: a launcher that is not torchrun (mpirun, srun: the rank in the environment, `init_process_group` by the
script). Each rank writes what it saw to `OUT/<mode>-rank<r>.json`; the test reads the run back.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.distributed import reduce_mean

STEPS = 5
CLIPS = 3
# Rank 0 scores clips 0-1 and rank 1 clip 2: shards of different sizes, as a last incomplete batch makes them.
SHARDS = (slice(0, 2), slice(2, 3))
MONITOR_THREAD = "opusclip-track-system-monitor"


def clips() -> tuple[torch.Tensor, torch.Tensor]:
    """`CLIPS` generated clips and their references, `(N, 16, 3, 32, 32)` in [0, 1]: smooth noise and a noisy copy
    (16 frames: FVD's clip length)."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(CLIPS * 16, 3, 4, 4, generator=gen)
    reference = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    generated = (reference + 0.1 * torch.randn(reference.shape, generator=gen)).clamp(0, 1)
    return generated.view(CLIPS, 16, 3, 32, 32), reference.view(CLIPS, 16, 3, 32, 32)


def video_metrics(weights_dir: Path, shards: list[slice]) -> dict[str, Any]:
    """The metric classes fed `shards` of `clips()`, one `update` per shard, then computed: under torchrun each
    rank passes its own shard and every `compute` reduces over the ranks; the test passes both in one process."""
    from opusclip_track.metrics import FID, FVD, PSNR, SSIM, VideoMetrics

    generated, reference = clips()
    psnr, ssim = PSNR(), SSIM()
    fid = FID(weights_dir=weights_dir, device="cpu")
    fvd = FVD(weights_dir=weights_dir, device="cpu", resolution=32)
    collection = VideoMetrics(("psnr", "ssim", "flicker"))
    for shard in shards:
        gen, ref = generated[shard], reference[shard]
        psnr.update(gen, ref)
        ssim.update(gen, ref)
        fid.update(generated=gen[:, :1], reference=ref[:, :1])  # one frame per clip: Inception is slow on a CPU
        fvd.update(generated=gen, reference=ref)
        collection.update(gen, ref)
    return {"psnr": float(psnr.compute()), "ssim": float(ssim.compute()), "fid": float(fid.compute()),
            "fvd": float(fvd.compute()), "psnr_curve": psnr.compute_curve().tolist(),
            "ssim_frame_scores": ssim.compute_frame_scores().tolist(), **collection.compute()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _filled(value: float, size: int = 4) -> torch.nn.Module:
    model = torch.nn.Linear(size, size)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)
    return model


def _error(call: Any) -> str | None:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _checkpoints(tracker: AdvancedExperimentTracker, rank: int) -> dict[str, Any]:
    """Save on every rank (each rank's model differs, so the file shows whose it is), then load on every rank."""
    info = tracker.save_checkpoint(_filled(rank + 1.0), epoch=0, step=STEPS, metrics={"val/loss": 0.5})
    seen: dict[str, Any] = {"returned": info is not None}
    if info is not None:
        seen.update(file=info.file, size=info.size, sha256=info.sha256,
                    on_disk_at_return=info.path.is_file() and _sha256(info.path) == info.sha256)
    fresh = _filled(0.0)
    loaded = tracker.load_checkpoint("latest", fresh)
    seen.update(loaded_step=loaded.step, loaded_weights=sorted(set(fresh.weight.detach().flatten().tolist())))
    seen["failed_save"] = _error(lambda: tracker.save_checkpoint(_filled(0.0), extra={"bad": object()}))
    return seen


def _async_checkpoints(out: Path, rank: int) -> dict[str, Any]:
    """With `async_checkpoint`: every rank returns rank 0's entry before the write lands; `load_checkpoint` waits."""
    with AdvancedExperimentTracker(experiment_name="async", run_name="async-ckpt", log_dir=str(out / "async-runs"),
                                   checkpoint_dir=str(out / "ckpt"), use_tensorboard=False, use_wandb=False,
                                   system_monitor_interval_s=0.0, async_checkpoint=True) as tracker:
        info = tracker.save_checkpoint(_filled(rank + 1.0, size=256), step=1)
        fresh = _filled(0.0, size=256)
        tracker.load_checkpoint("latest", fresh)
        latest = tracker.checkpoints.latest
        assert latest is not None
        return {"returned": None if info is None else [info.file, info.size, info.sha256],
                "latest": [latest.file, latest.size, latest.sha256], "latest_sha256_on_disk": _sha256(latest.path),
                "loaded_weights": sorted(set(fresh.weight.detach().flatten().tolist()))}


def torchrun_job(out: Path, weights_dir: Path) -> dict[str, Any]:
    rank = int(os.environ["RANK"])
    report: dict[str, Any] = {"rank": rank}
    # A tracker created before init_process_group: its generated name comes through torchrun's own store.
    with AdvancedExperimentTracker(experiment_name="early", log_dir=str(out / "early-runs"), use_tensorboard=False,
                                   use_wandb=False, system_monitor_interval_s=0.0) as early:
        report["early_run_name"] = early.run_name
    torch.distributed.init_process_group("gloo")
    config = TrackingConfig(experiment_name="ddp", project_name="torchrun-test", log_dir=str(out / "runs"),
                            checkpoint_dir=str(out / "ckpt"), wandb_mode="offline", backends=["mlflow"],
                            system_monitor_interval_s=0.05, flush_interval_s=0.2, async_checkpoint=False)
    report["name_generated_here"] = config.run_name
    tracker = AdvancedExperimentTracker(config)
    report["run_name"] = tracker.run_name
    for step in range(STEPS):  # every rank logs; only rank 0's values may reach the run
        tracker.log_metrics({"train/loss": 100.0 * rank + step, "train/rank": rank}, step=step)
    mean = reduce_mean(torch.tensor(rank + 1.0))
    report["reduce_mean"] = float(mean)
    tracker.log_metrics({"train/mean_over_ranks": mean}, step=STEPS - 1)
    tracker.log_text("notes", f"written by rank {rank}", step=0)
    tracker.log_hyperparameters({"lr": 0.1, "rank": rank})
    fade = torch.linspace(0, 1, 4).view(4, 1, 1, 1).expand(4, 3, 16, 16)  # 4 different frames (a GIF keeps them)
    tracker.log_video(fade * (1 - rank / 2), "samples/clip", step=STEPS - 1, fps=4)
    report["metrics"] = video_metrics(weights_dir, [SHARDS[rank]])
    gen, ref = clips()  # every rank evaluates its own shard; the scores are over both shards' clips
    report["evaluated"] = tracker.evaluate_videos(gen[SHARDS[rank]], ref[SHARDS[rank]], step=STEPS,
                                                  metrics=("psnr", "ssim"))
    report["checkpoints"] = _checkpoints(tracker, rank)
    time.sleep(0.3)  # the monitor samples every 0.05 s
    report["monitor_threads"] = sum(t.name == MONITOR_THREAD for t in threading.enumerate())
    report["performance"] = tracker.log_performance_metrics()
    tracker.close()
    report["async"] = _async_checkpoints(out, rank)
    torch.distributed.destroy_process_group()
    return report


def launcher_job(out: Path) -> dict[str, Any]:
    """Another launcher: the rank in the environment, no torchrun store; names are agreed once the group exists."""
    report: dict[str, Any] = {"rank": int(os.environ["RANK"])}
    options: dict[str, Any] = {"experiment_name": "other", "log_dir": str(out / "launcher-runs"),
                               "use_tensorboard": False, "use_wandb": False, "system_monitor_interval_s": 0.0}
    report["before_init_error"] = _error(lambda: AdvancedExperimentTracker(**options).close())
    with AdvancedExperimentTracker(run_name="given-name", **options) as tracker:  # a given name needs no store
        report["given_run_name"] = tracker.run_name
    torch.distributed.init_process_group("gloo")
    with AdvancedExperimentTracker(**options) as tracker:
        report["run_name"] = tracker.run_name
    torch.distributed.destroy_process_group()
    return report


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    report = torchrun_job(out, Path(sys.argv[3])) if mode == "torchrun" else launcher_job(out)
    (out / f"{mode}-rank{report['rank']}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
