"""Datasets: synthetic bouncing shapes (determinism, motion, bounds) and clips cut from real video files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from opusclip_track.data import SyntheticVideoDataset, VideoFolderDataset

# ---------------------------------------------------------------------------------------------------------
# SyntheticVideoDataset


def test_clip_shape_dtype_and_range() -> None:
    ds = SyntheticVideoDataset(num_clips=5, num_frames=7, size=(24, 40), channels=1, background="texture")
    clip = ds[3]
    assert len(ds) == 5
    assert clip.shape == (7, 1, 24, 40) and clip.dtype == torch.float32
    assert 0.0 <= clip.min() and clip.max() <= 1.0
    assert SyntheticVideoDataset()[0].shape == (16, 3, 64, 64)  # the documented defaults


def test_same_seed_and_index_give_the_same_clip_in_any_order_and_worker() -> None:
    a = SyntheticVideoDataset(num_clips=6, num_frames=4, size=32, seed=7)
    b = SyntheticVideoDataset(num_clips=6, num_frames=4, size=32, seed=7)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert torch.equal(x, y)
    loaded = torch.cat(list(DataLoader(a, batch_size=2, num_workers=2, shuffle=False)))
    assert torch.equal(loaded, torch.stack(forward))
    assert torch.equal(a[-1], forward[-1])


def test_different_seed_or_index_gives_a_different_clip() -> None:
    a = SyntheticVideoDataset(num_clips=2, size=32, seed=0)
    b = SyntheticVideoDataset(num_clips=2, size=32, seed=1)
    assert (a[0] - b[0]).abs().mean() > 0.01
    assert (a[0] - a[1]).abs().mean() > 0.01


def test_shapes_move_between_frames_and_texture_fills_the_background() -> None:
    clip = SyntheticVideoDataset(num_clips=1, num_frames=8, size=48)[0]
    change = (clip[1:] - clip[:-1]).abs().amax(dim=1)  # (T-1, H, W)
    assert ((change > 0.1).flatten(1).sum(dim=1) > 10).all()  # every frame-to-frame step moves pixels
    plain = clip.amax(dim=1) == 0
    assert plain.float().mean() > 0.5  # "none": black background around the shapes
    textured = SyntheticVideoDataset(num_clips=1, size=48, background="texture")[0]
    assert (textured.amax(dim=1) > 0.02).all()  # no black pixel left
    assert textured[:, :, :4, :4].std() > 0  # ... and not a flat colour either


def test_shapes_bounce_and_stay_inside_the_frame() -> None:
    # 300 frames at up to 0.06 * 32 px per frame: every shape crosses the frame several times.
    clip = SyntheticVideoDataset(num_clips=1, num_frames=300, size=32, num_shapes=1, seed=3)[0]
    area = (clip.amax(dim=1) > 0.5).flatten(1).sum(dim=1).float()  # (T,) pixels covered by the shape
    assert area.min() > 0.8 * area.max()  # never leaves, never gets cut by an edge
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    weight = clip.amax(dim=1)
    cx = (weight * xs).sum(dim=(1, 2)) / weight.sum(dim=(1, 2))
    step = cx[1:] - cx[:-1]
    assert (step > 0.1).any() and (step < -0.1).any()  # moved both ways: it bounced off a wall


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"num_frames": 0}, r"num_frames: expected an int >= 1, received 0"),
    ({"num_clips": 2.5}, r"num_clips: expected an int >= 1, received 2.5"),
    ({"size": (32, 0)}, r"size: expected .*received \(32, 0\)"),
    ({"size": 4}, r"size: expected frames of at least 8x8"),
    ({"background": "noise"}, r"background: expected 'none' or 'texture', received 'noise'"),
    ({"seed": -1}, r"seed: expected an int >= 0, received -1"),
])
def test_bad_arguments_name_the_argument(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        SyntheticVideoDataset(**kwargs)


def test_index_out_of_range() -> None:
    with pytest.raises(IndexError, match=r"index: expected -3 <= index < 3, received 3"):
        SyntheticVideoDataset(num_clips=3)[3]


# ---------------------------------------------------------------------------------------------------------
# VideoFolderDataset


def _write_mp4(path: Path, num_frames: int, height: int = 48, width: int = 64) -> None:
    """Frame k is flat grey of level 8 k: a clip's frames say which source frames they came from."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "0"}
        for k in range(num_frames):
            frame = np.full((height, width, 3), 8 * k, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    (root / "more").mkdir(parents=True)
    _write_mp4(root / "a.mp4", 20)
    _write_mp4(root / "more" / "b.MP4", 30)  # nested, upper-case extension
    (root / "notes.txt").write_text("not a video")
    return root


def _source_frames(clip: torch.Tensor) -> list[int]:
    return [round(float(level) * 255 / 8) for level in clip.mean(dim=(1, 2, 3))]


def test_clips_with_stride_cover_every_file(video_dir: Path) -> None:
    ds = VideoFolderDataset(video_dir, clip_length=8, stride=4, size=32)
    # a.mp4, 20 frames: starts 0 4 8 12; b.MP4, 30 frames: starts 0 4 8 12 16 20
    assert len(ds) == 10
    assert [(p.name, s) for p, s in ds.clips] == [("a.mp4", s) for s in (0, 4, 8, 12)] + [
        ("b.MP4", s) for s in (0, 4, 8, 12, 16, 20)]
    clip = ds[5]  # b.MP4 from frame 4
    assert clip.shape == (8, 3, 32, 32) and clip.dtype == torch.float32
    assert 0.0 <= clip.min() and clip.max() <= 1.0
    assert _source_frames(clip) == list(range(4, 12))
    assert _source_frames(ds[3]) == list(range(12, 20))  # the last clip of a.mp4 ends at its last frame


def test_size_none_keeps_the_file_size_and_pairs_resize(video_dir: Path) -> None:
    assert VideoFolderDataset(video_dir, clip_length=16, size=None)[0].shape == (16, 3, 48, 64)
    ds = VideoFolderDataset(video_dir, clip_length=16, stride=16, size=(24, 40))
    assert len(ds) == 2  # one 16-frame clip from each file
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch.shape == (2, 16, 3, 24, 40)


def test_unreadable_file_is_named(video_dir: Path) -> None:
    (video_dir / "broken.mp4").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(ValueError, match=r"broken\.mp4"):
        VideoFolderDataset(video_dir)


def test_empty_or_missing_folder_and_short_videos(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"root: expected a folder holding video files .*empty.* with none"):
        VideoFolderDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"root: expected an existing folder"):
        VideoFolderDataset(tmp_path / "nowhere")
    (tmp_path / "short").mkdir()
    _write_mp4(tmp_path / "short" / "s.mp4", 5)
    with pytest.raises(ValueError, match=r"at least one video of >= 16 frames"):
        VideoFolderDataset(tmp_path / "short", clip_length=16)
    with pytest.raises(ValueError, match=r"stride: expected an int >= 1, received 0"):
        VideoFolderDataset(tmp_path / "short", stride=0)
