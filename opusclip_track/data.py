"""Video datasets: synthetic bouncing shapes (no download) and fixed-length clips from a folder of videos.

Both return clips as float32 tensors in [0, 1] shaped `(T, C, H, W)`, so a `DataLoader` batches them into
`(B, T, C, H, W)`, the layout every model, metric and logging call of this project takes.

Example:
    >>> from torch.utils.data import DataLoader
    >>> clips = SyntheticVideoDataset(num_clips=64, num_frames=16, size=64, seed=0)
    >>> batch = next(iter(DataLoader(clips, batch_size=8)))   # (8, 16, 3, 64, 64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from opusclip_track._checks import check_int, is_int
from opusclip_track.media import read_video, video_info

Background = Literal["none", "texture"]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


def _as_size(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """`64` or `(48, 64)` -> `(H, W)`, both positive."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(is_int(s) and s > 0 for s in hw):
        raise ValueError(f"{name}: expected a positive int or a (height, width) pair of positive ints, "
                         f"received {size!r}")
    return hw  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------
# Synthetic bouncing shapes


def _bounce(start: Tensor, velocity: Tensor, low: Tensor, high: Tensor, num_frames: int) -> Tensor:
    """Positions over time of points moving at constant velocity between two walls, reflecting elastically.

    Unfolding the reflections turns the path into a triangle wave, so every frame is computed at once.
    `start`, `velocity`, `low`, `high`: (S,); returns (T, S).
    """
    t = torch.arange(num_frames, dtype=torch.float64)[:, None]  # (T, 1)
    span = (high - low).clamp_min(1e-6)  # (S,)
    unfolded = torch.remainder(start - low + velocity * t, 2 * span)  # (T, S), in [0, 2 * span)
    return low + span - (unfolded - span).abs()


def _smooth_texture(rng: np.random.Generator, channels: int, height: int, width: int) -> Tensor:
    """A smooth background: a few low-frequency sinusoids per channel, in [0.05, 0.45]. (C, H, W)"""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height, dtype=torch.float64),
                            torch.linspace(0, 1, width, dtype=torch.float64), indexing="ij")
    waves = 4
    freq = torch.from_numpy(rng.uniform(0.5, 3.0, size=(channels, waves, 2)))  # cycles per frame
    phase = torch.from_numpy(rng.uniform(0, 2 * math.pi, size=(channels, waves)))
    arg = (2 * math.pi * (freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx)
           + phase[..., None, None])  # (C, waves, H, W)
    texture = torch.sin(arg).mean(dim=1)  # (C, H, W), in [-1, 1]
    return 0.25 + 0.2 * texture


@dataclass(frozen=True)
class _Shapes:
    """The random draw behind one clip: S shapes with their geometry, motion and colour."""

    is_disc: Tensor  # (S,) bool
    radius: Tensor  # (S,) pixels
    start: Tensor  # (S, 2) centre (y, x) at frame 0, pixels
    velocity: Tensor  # (S, 2) pixels per frame
    colour: Tensor  # (S, C) in [0.35, 1]


def _draw_shapes(rng: np.random.Generator, num_shapes: int, channels: int, height: int,
                 width: int) -> _Shapes:
    short = min(height, width)
    radius = rng.uniform(0.08, 0.16, size=num_shapes) * short
    extent = np.array([height, width], dtype=np.float64)
    start = rng.uniform(radius[:, None], extent - radius[:, None], size=(num_shapes, 2))
    speed = rng.uniform(0.025, 0.06, size=num_shapes) * short
    angle = rng.uniform(0, 2 * math.pi, size=num_shapes)
    velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    return _Shapes(is_disc=torch.from_numpy(rng.random(num_shapes) < 0.5),
                   radius=torch.from_numpy(radius), start=torch.from_numpy(start),
                   velocity=torch.from_numpy(velocity),
                   colour=torch.from_numpy(rng.uniform(0.35, 1.0, size=(num_shapes, channels))))


def _render(shapes: _Shapes, background: Tensor, num_frames: int) -> Tensor:
    """Paint the shapes, in order, over `background` (C, H, W) for every frame at once. -> (T, C, H, W)"""
    channels, height, width = background.shape
    low = shapes.radius[:, None].expand(-1, 2)  # (S, 2): walls the centre reflects off, per axis
    high = torch.tensor([height, width], dtype=torch.float64) - low
    cy = _bounce(shapes.start[:, 0], shapes.velocity[:, 0], low[:, 0], high[:, 0], num_frames)  # (T, S)
    cx = _bounce(shapes.start[:, 1], shapes.velocity[:, 1], low[:, 1], high[:, 1], num_frames)  # (T, S)
    # Pixel centres, so a shape's edge falls between pixels and is anti-aliased below.
    yy = torch.arange(height, dtype=torch.float64)[:, None] + 0.5  # (H, 1)
    xx = torch.arange(width, dtype=torch.float64)[None, :] + 0.5  # (1, W)
    frames = background.to(torch.float64).expand(num_frames, -1, -1, -1).clone()  # (T, C, H, W)
    for s in range(shapes.radius.numel()):
        dy = (yy - cy[:, s, None, None]).abs()  # (T, H, 1)
        dx = (xx - cx[:, s, None, None]).abs()  # (T, 1, W)
        distance = torch.sqrt(dy**2 + dx**2) if shapes.is_disc[s] else torch.maximum(dy, dx)  # (T, H, W)
        coverage = (shapes.radius[s] - distance + 0.5).clamp(0, 1)[:, None]  # (T, 1, H, W), 1-pixel soft edge
        frames = frames * (1 - coverage) + shapes.colour[s, :, None, None] * coverage
    return frames.to(torch.float32)


class SyntheticVideoDataset(Dataset[Tensor]):
    """Clips of coloured squares and discs bouncing off the walls, generated on the fly.

    Clip `i` depends only on `(seed, i)`: the same in every worker, epoch and access order. Rendering is
    vectorised over frames and pixels, so a 16-frame 64x64 clip takes about a millisecond.

    Args:
        num_clips: Length of the dataset.
        num_frames: Frames per clip (T).
        size: Frame size, an int for square frames or `(height, width)`.
        num_shapes: Shapes per clip, each a square or a disc with its own colour, size and velocity.
        channels: Colour channels (C): 3 for RGB, 1 for grey.
        background: `"none"` for black, `"texture"` for a smooth static pattern that differs per clip.
        seed: Base seed; a different seed gives a different dataset.

    Returns (per item):
        A float32 tensor `(T, C, H, W)` in [0, 1].

    Example:
        >>> clip = SyntheticVideoDataset(num_clips=4, size=(48, 64))[0]   # (16, 3, 48, 64)
    """

    def __init__(self, num_clips: int = 256, num_frames: int = 16, size: int | tuple[int, int] = 64,
                 num_shapes: int = 3, channels: int = 3, background: Background = "none",
                 seed: int = 0) -> None:
        check_int("num_clips", num_clips, minimum=1)
        check_int("num_frames", num_frames, minimum=1)
        check_int("num_shapes", num_shapes, minimum=1)
        check_int("channels", channels, minimum=1)
        if background not in ("none", "texture"):
            raise ValueError(f"background: expected 'none' or 'texture', received {background!r}")
        check_int("seed", seed, minimum=0)
        self.size = _as_size(size)
        if min(self.size) < 8:
            raise ValueError(f"size: expected frames of at least 8x8 pixels, received {self.size}")
        self.num_clips, self.num_frames, self.num_shapes = num_clips, num_frames, num_shapes
        self.channels, self.background, self.seed = channels, background, seed

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> Tensor:
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"index: expected -{self.num_clips} <= index < {self.num_clips}, "
                             f"received {index}")
        index %= self.num_clips
        # SeedSequence mixes (seed, index) into independent streams: no overlap between neighbouring clips.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        height, width = self.size
        background = (_smooth_texture(rng, self.channels, height, width) if self.background == "texture"
                      else torch.zeros(self.channels, height, width, dtype=torch.float64))
        shapes = _draw_shapes(rng, self.num_shapes, self.channels, height, width)
        return _render(shapes, background, self.num_frames)


# ----------------------------------------------------------------------------------------------------------
# A folder of real videos


class VideoFolderDataset(Dataset[Tensor]):
    """Fixed-length clips cut from every video file under a folder, decoded with PyAV on access.

    The index is built once at construction from each file's frame count (`media.video_info`, which reads
    the container header and demuxes without decoding). A file of `n` frames gives the clips starting at
    `0, stride, 2 * stride, ...` that fit entirely inside it; shorter files give none.

    Args:
        root: Folder searched recursively for video files.
        clip_length: Frames per clip (T).
        stride: Frames between the starts of consecutive clips of a file (`stride < clip_length` overlaps).
        size: Frame size to resize to, an int for square or `(height, width)`; None keeps each file's size
            (then files of different sizes cannot share a batch).
        extensions: File name endings that count as videos (case-insensitive).

    Returns (per item):
        A float32 tensor `(T, 3, H, W)` in [0, 1] (frames are decoded as RGB).

    Raises:
        FileNotFoundError: `root` is not a folder.
        ValueError: no video file under `root`, no file long enough for one clip, or a file PyAV cannot
            read (the message names the file).

    Example:
        >>> clips = VideoFolderDataset("videos/", clip_length=16, stride=8, size=64)
        >>> clips.clips[0]   # ('videos/a.mp4', 0): the file and start frame of clip 0
    """

    def __init__(self, root: str | Path, *, clip_length: int = 16, stride: int = 8,
                 size: tuple[int, int] | int | None = 64,
                 extensions: Sequence[str] = VIDEO_EXTENSIONS) -> None:
        check_int("clip_length", clip_length, minimum=1)
        check_int("stride", stride, minimum=1)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: expected an existing folder of videos, received {str(root)!r}")
        self.clip_length, self.stride = clip_length, stride
        self.size = None if size is None else _as_size(size)
        self.files = _find_videos(self.root, extensions)
        self.clips: list[tuple[Path, int]] = [
            (path, start) for path in self.files for start in _clip_starts(path, clip_length, stride)]
        if not self.clips:
            raise ValueError(f"root: expected at least one video of >= {clip_length} frames (clip_length), "
                             f"received {len(self.files)} shorter file(s) in {str(self.root)!r}")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Tensor:
        path, start = self.clips[index]
        video, _ = read_video(path, start_frame=start, num_frames=self.clip_length, size=self.size)
        return video.to(torch.float32).div_(255.0)  # (T, 3, H, W)


def _find_videos(root: Path, extensions: Sequence[str]) -> list[Path]:
    if isinstance(extensions, str) or not extensions:
        raise ValueError(f"extensions: expected a non-empty sequence like ('.mp4', '.gif'), "
                         f"received {extensions!r}")
    wanted = tuple(e.lower() for e in extensions)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(wanted))
    if not files:
        raise ValueError(f"root: expected a folder holding video files ({', '.join(wanted)}), "
                         f"received {str(root)!r} with none")
    return files


def _clip_starts(path: Path, clip_length: int, stride: int) -> range:
    frames = int(video_info(path)["frames"])  # ValueError naming `path` when PyAV cannot read it
    return range(0, frames - clip_length + 1, stride)
