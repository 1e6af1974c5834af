"""Cost of logging a clip: the caller's hot path against the encoding it defers, and worker throughput.

One process, one 16x3x128x128 float clip in [0, 1] (bouncing shapes on a smooth texture, from
`SyntheticVideoDataset`: generated samples compress like this, not like noise; uniform noise, the worst case
for both codecs, is reported as `noise_encode_ms`):

* encode: what the worker does per clip, `video_to_frames` + `encode_mp4` (W&B) + `encode_gif` (TensorBoard),
  timed per stage, median of `--reps`;
* media clips/s: the same three steps back to back in one thread (the ceiling of one worker);
* hot path: `tracker.log_video` per call in the caller's thread (median), and its ratio to the encode it defers;
  plus its parts: `check_video`, and the host copy (`Tensor.clone()` against a numpy copy) timed in the same
  loop while the worker encodes;
* worker clips/s: log `--clips` clips then `close()` (until every file is written): clips / elapsed.

Run: `python benchmarks/bench_media.py [--reps 20] [--clips 40] [--json out.json]`. Machines are noisy: read
the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from opusclip_track.data import SyntheticVideoDataset
from opusclip_track.media import check_video, encode_gif, encode_mp4, video_to_frames

CLIP_SHAPE = (16, 3, 128, 128)  # (T, C, H, W)
FPS = 8.0


@dataclass
class BenchConfig:
    reps: int = 20  # encode repetitions per stage
    clips: int = 40  # clips logged through the tracker for the worker's throughput
    json: str | None = None


def _median_ms(fn: Callable[[int], Any], reps: int) -> float:
    fn(-1)  # warm-up: codec initialisation, first allocation
    times = []
    for i in range(reps):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _elapsed_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def bench_encode(clip: torch.Tensor, reps: int, folder: Path) -> dict[str, float]:
    """Median milliseconds per stage of the worker's encode, and clips/s of the three back to back."""
    frames = video_to_frames(clip)
    out = {
        "convert_ms": _median_ms(lambda i: video_to_frames(clip), reps),
        "mp4_ms": _median_ms(lambda i: encode_mp4(frames, folder / f"stage_{i}.mp4", FPS), reps),
        "gif_ms": _median_ms(lambda i: encode_gif(frames, FPS), reps),
    }

    def full(i: int) -> None:
        f = video_to_frames(clip)
        encode_mp4(f, folder / f"full_{i}.mp4", FPS)
        encode_gif(f, FPS)

    start = time.perf_counter()
    for i in range(reps):
        full(i)
    out["encode_ms"] = out["convert_ms"] + out["mp4_ms"] + out["gif_ms"]
    out["media_clips_per_s"] = reps / (time.perf_counter() - start)
    return out


def bench_tracker(clip: torch.Tensor, clips: int, folder: Path) -> dict[str, float]:
    """Hot-path median of `log_video`, clips/s until `close()`, and the hot path's parts."""
    from opusclip_track import AdvancedExperimentTracker, TrackingConfig

    tracker = AdvancedExperimentTracker(TrackingConfig(experiment_name="bench_media", log_dir=str(folder),
                                                       use_wandb=False))
    hot, clone, numpy_copy = [], [], []
    start = time.perf_counter()
    for step in range(clips):
        hot.append(_elapsed_ms(partial(tracker.log_video, clip, "samples/clip", step=step, fps=FPS)))
        # The host copy the hot path takes, two ways, measured while the worker encodes: Tensor.clone() runs
        # on torch's intra-op thread pool, which waits for busy cores; a numpy copy is a single-threaded memcpy.
        clone.append(_elapsed_ms(clip.clone))
        numpy_copy.append(_elapsed_ms(lambda: torch.from_numpy(clip.numpy().copy())))
    tracker.close()
    elapsed = time.perf_counter() - start
    return {"log_video_hot_ms": statistics.median(hot), "worker_clips_per_s": clips / elapsed,
            "clone_busy_ms": statistics.median(clone), "numpy_copy_busy_ms": statistics.median(numpy_copy),
            "check_video_ms": _median_ms(lambda i: check_video(clip), 100)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BenchConfig()
    parser.add_argument("--reps", type=int, default=defaults.reps)
    parser.add_argument("--clips", type=int, default=defaults.clips)
    parser.add_argument("--json", default=defaults.json, help="write the figures to this JSON file")
    cfg = BenchConfig(**vars(parser.parse_args(argv)))

    frames, channels, height, width = CLIP_SHAPE
    clip = SyntheticVideoDataset(1, frames, (height, width), channels=channels, background="texture")[0]
    noise = torch.rand(CLIP_SHAPE, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "enc").mkdir()
        result: dict[str, Any] = {"clip": list(CLIP_SHAPE), "config": asdict(cfg)}
        result.update(bench_encode(clip, cfg.reps, Path(tmp) / "enc"))
        result["noise_encode_ms"] = bench_encode(noise, max(3, cfg.reps // 4), Path(tmp) / "enc")["encode_ms"]
        tracked = bench_tracker(clip, cfg.clips, Path(tmp) / "runs")
    print(f"clip {CLIP_SHAPE} float32, fps {FPS:g}")
    print(f"  encode on the worker: convert {result['convert_ms']:.2f} ms + mp4 {result['mp4_ms']:.1f} ms "
          f"+ gif {result['gif_ms']:.1f} ms = {result['encode_ms']:.1f} ms "
          f"({result['media_clips_per_s']:.1f} clips/s in one thread); noise clip {result['noise_encode_ms']:.1f} ms")
    result.update(tracked, encode_over_hot_path=result["encode_ms"] / tracked["log_video_hot_ms"])
    print(f"  tracker.log_video hot path: {tracked['log_video_hot_ms']:.3f} ms "
          f"(encode / hot path = {result['encode_over_hot_path']:.0f}x); worker sustains "
          f"{tracked['worker_clips_per_s']:.1f} clips/s until close()")
    print(f"  hot-path parts: check_video {tracked['check_video_ms'] * 1e3:.1f} us; host copy while the worker "
          f"encodes: Tensor.clone() {tracked['clone_busy_ms']:.2f} ms vs numpy copy "
          f"{tracked['numpy_copy_busy_ms']:.2f} ms")
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
