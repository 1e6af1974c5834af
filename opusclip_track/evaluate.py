"""Evaluate a folder of generated videos against a folder of references, paired by file name.

What `opusclip-track eval` runs; importable for notebooks and scripts. It sits above both halves it joins:
`media` decodes the files and `metrics` scores them, and neither of those imports this module.

Example:
    >>> from opusclip_track.evaluate import evaluate_folders
    >>> report = evaluate_folders("samples/", "real/", metrics=("psnr", "ssim"))  # doctest: +SKIP
    >>> report["metrics"]  # {"video/psnr": 28.8, "video/ssim": 0.54}  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from opusclip_track._checks import argument_error, is_int
from opusclip_track.media import read_video
from opusclip_track.metrics.collection import MetricName, VideoMetrics

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif"})


@dataclass(frozen=True)
class VideoPair:
    """A generated video and its reference, sharing the file stem `name`."""

    name: str
    generated: Path
    reference: Path


def _video_files(directory: str | Path, *, name: str) -> dict[str, Path]:
    """`{stem: path}` of the video files directly in `directory`."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: expected a directory of video files, received {str(folder)!r} "
                                "(not a directory)")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        if path.stem in by_stem:
            raise ValueError(f"{name}: expected one video per name, received both {by_stem[path.stem].name!r} "
                             f"and {path.name!r} in {str(folder)!r}")
        by_stem[path.stem] = path
    if not by_stem:
        raise ValueError(f"{name}: expected video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in "
                         f"{str(folder)!r}, received none")
    return by_stem


def pair_video_files(generated_dir: str | Path, reference_dir: str | Path) -> list[VideoPair]:
    """Pair the videos of two folders by file stem (`clip_007.mp4` with `clip_007.gif`), sorted by name.

    Raises:
        FileNotFoundError: when a folder does not exist.
        ValueError: when a folder has no videos, two videos with one stem, or a video without a partner;
            the message lists the unpaired names on each side.
    """
    generated = _video_files(generated_dir, name="generated")
    reference = _video_files(reference_dir, name="reference")
    only_gen = sorted(generated.keys() - reference.keys())
    only_ref = sorted(reference.keys() - generated.keys())
    if only_gen or only_ref:
        raise ValueError(
            "generated/reference: expected the same video names in both folders, received "
            f"{len(only_gen)} only in {str(generated_dir)!r} {_preview(only_gen)} and "
            f"{len(only_ref)} only in {str(reference_dir)!r} {_preview(only_ref)}")
    return [VideoPair(stem, generated[stem], reference[stem]) for stem in sorted(generated)]


def _preview(names: list[str], limit: int = 5) -> str:
    shown = names[:limit] + (["..."] if len(names) > limit else [])
    return "[" + ", ".join(shown) + "]"


def _read_pair(pair: VideoPair, *, num_frames: int | None,
               size: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
    clips = []
    for role, path in (("generated", pair.generated), ("reference", pair.reference)):
        try:
            clips.append(read_video(path, num_frames=num_frames, size=size)[0])
        except (ValueError, OSError) as err:
            raise ValueError(f"{role} video {str(path)!r} could not be read: {err}") from err
    gen, ref = clips
    if gen.shape != ref.shape:
        raise ValueError(f"reference video {str(pair.reference)!r}: expected the same (T, C, H, W) as "
                         f"generated {str(pair.generated)!r} {tuple(gen.shape)}, received {tuple(ref.shape)} "
                         "(use --num-frames / --size to read both at one length and size)")
    return gen, ref


def evaluate_folders(
    generated_dir: str | Path,
    reference_dir: str | Path,
    *,
    metrics: Iterable[MetricName] = ("psnr", "ssim", "flicker"),
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
    batch_size: int = 8,
    weights_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every generated video against the reference of the same name.

    Args:
        generated_dir: folder of generated videos (any format PyAV reads).
        reference_dir: folder of reference videos with the same file stems.
        metrics: metric names (see `VideoMetrics`).
        num_frames: read only the first `num_frames` frames of every video; None reads all (then every
            video must have the same length).
        size: `(height, width)` to resize every frame to; None keeps the files' size.
        batch_size: pairs per metric update.
        weights_dir: a directory searched first for pretrained weights.
        device: where to compute (None: CPU, as the decoded frames).
        progress: show a tqdm progress bar on stderr.

    Returns:
        A JSON-ready report: `"metrics"`, the scores over every pair (`{"video/psnr": 28.8, ...}`);
        `"curves"`, the per-frame metrics (PSNR, SSIM, LPIPS) at each timestep, averaged over clips
        (`{"video/psnr": [T floats]}`); `"clips"`, one entry per pair in name order with its `"name"`, the
        `"generated"` and `"reference"` paths, its own `"metrics"` (PSNR, SSIM, LPIPS, flicker,
        temporal_diff; FID, IS and FVD exist only for the whole set) and its own per-frame `"curves"`;
        `"pairs"`, the names; and `"protocol"`, `VideoMetrics.protocol()`.

    Raises:
        ValueError, FileNotFoundError: for unpaired or unreadable files and clips of different shapes, naming
            the files.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise argument_error("batch_size", "a positive int", batch_size)
    pairs = pair_video_files(generated_dir, reference_dir)
    scorer = VideoMetrics(metrics, value_range=(0.0, 1.0), weights_dir=weights_dir, device=device)
    first: tuple[VideoPair, torch.Size] | None = None
    pending: list[tuple[Tensor, Tensor]] = []
    for pair in tqdm(pairs, desc="eval", unit="video", disable=not progress):
        gen, ref = _read_pair(pair, num_frames=num_frames, size=size)
        first = first or (pair, gen.shape)
        if gen.shape != first[1]:
            raise ValueError(f"generated video {str(pair.generated)!r}: expected the (T, C, H, W) of "
                             f"{first[0].generated.name!r} {tuple(first[1])}, received {tuple(gen.shape)} "
                             "(use --num-frames / --size to read every video at one length and size)")
        pending.append((gen, ref))
        if len(pending) == batch_size:
            _update(scorer, pending)
            pending = []
    if pending:
        _update(scorer, pending)
    return _report(scorer, pairs)


def _report(scorer: VideoMetrics, pairs: list[VideoPair]) -> dict[str, Any]:
    """The scores over all pairs, per timestep and per clip, as plain floats and lists (JSON-ready)."""
    per_clip = scorer.compute_per_clip()  # key -> (N,), clips in `pairs` order (the order of the updates)
    frame_scores = scorer.compute_frame_scores()  # key -> (N, T)
    clips = [{"name": pair.name, "generated": str(pair.generated), "reference": str(pair.reference),
              "metrics": {key: float(values[i]) for key, values in per_clip.items()},
              "curves": {key: scores[i].tolist() for key, scores in frame_scores.items()}}
             for i, pair in enumerate(pairs)]
    return {"metrics": scorer.compute(),
            "curves": {key: curve.tolist() for key, curve in scorer.compute_curves().items()},
            "clips": clips, "pairs": [p.name for p in pairs], "protocol": scorer.protocol()}


def _update(scorer: VideoMetrics, pending: list[tuple[Tensor, Tensor]]) -> None:
    scorer.update(torch.stack([gen for gen, _ in pending]), torch.stack([ref for _, ref in pending]))
