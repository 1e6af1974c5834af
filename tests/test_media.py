"""Media: conversion, MP4/GIF/PNG encoding and decoding with real PyAV and Pillow (no moviepy)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from opusclip_track.media import (
    check_image,
    check_video,
    encode_gif,
    encode_mp4,
    encode_png,
    image_to_array,
    make_image_grid,
    read_video,
    render_figure,
    video_info,
    video_to_frames,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the Agg backend)

T, H, W, FPS = 12, 96, 128, 8.0


def moving_clip(t: int = T, h: int = H, w: int = W, channels: int = 3) -> torch.Tensor:
    """Float (T, C, H, W) in [0, 1]: smooth colour gradients drifting over time plus a moving white square."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = []
    for i in range(t):
        frame = torch.stack([x, y, 0.5 + 0.4 * torch.sin(2 * torch.pi * (x + y + i / t))])
        top, left = (2 * i) % (h - h // 4), (3 * i) % (w - w // 4)
        frame[:, top:top + h // 4, left:left + w // 4] = 0.9
        frames.append(frame[:channels])
    return torch.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def gif_frames(data: bytes) -> tuple[list[np.ndarray], Image.Image]:
    image = Image.open(io.BytesIO(data))
    frames = []
    for i in range(image.n_frames):
        image.seek(i)
        frames.append(np.asarray(image.convert("RGB")))
    return frames, image


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return moving_clip()


@pytest.fixture(scope="module")
def frames(clip: torch.Tensor) -> np.ndarray:
    return video_to_frames(clip)


@pytest.fixture(scope="module")
def numbered_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 uniform gray frames at 8 fps; frame i has level 20 * i, so a decoded frame tells its index."""
    levels = np.arange(T, dtype=np.uint8) * 20
    video = np.broadcast_to(levels[:, None, None, None], (T, 32, 48, 3)).copy()
    return encode_mp4(video, tmp_path_factory.mktemp("numbered") / "numbered.mp4", fps=FPS)


def frame_indices(video: torch.Tensor) -> list[int]:
    return [round(float(f.float().mean()) / 20) for f in video]


# ---------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------


def test_float_clip_becomes_rounded_uint8_thwc(clip: torch.Tensor, frames: np.ndarray) -> None:
    assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8 and frames.flags.c_contiguous
    expected = (clip.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(frames, expected)


def test_minus_one_to_one_and_uint8_inputs_give_the_same_frames(clip: torch.Tensor, frames: np.ndarray) -> None:
    tanh_space = video_to_frames(clip * 2 - 1, value_range=(-1.0, 1.0))
    assert np.abs(tanh_space.astype(int) - frames).max() <= 1
    as_uint8 = torch.from_numpy(frames).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(video_to_frames(as_uint8), frames)
    assert np.abs(video_to_frames(clip.half()).astype(int) - frames).max() <= 1
    assert np.abs(video_to_frames(clip.to(torch.bfloat16)).astype(int) - frames).max() <= 2


def test_single_channel_is_gray_replicated(clip: torch.Tensor) -> None:
    gray = video_to_frames(clip[:, :1])
    assert gray.shape == (T, H, W, 3)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_array_equal(gray[..., 0], (clip[:, 0].numpy() * 255 + 0.5).astype(np.uint8))


def test_numpy_channels_last_with_layout(clip: torch.Tensor, frames: np.ndarray) -> None:
    thwc = clip.permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(video_to_frames(thwc, layout="THWC"), frames)
    np.testing.assert_array_equal(video_to_frames(thwc[None], layout="BTHWC"), frames)
    np.testing.assert_array_equal(video_to_frames(clip.numpy()), frames)


def test_batch_is_clips_side_by_side(clip: torch.Tensor, frames: np.ndarray) -> None:
    other = clip.flip(-1)
    grid = video_to_frames(torch.stack([clip, other]), padding=2)
    assert grid.shape == (T, H, 2 * W + 2, 3)
    np.testing.assert_array_equal(grid[:, :, :W], frames)
    np.testing.assert_array_equal(grid[:, :, W + 2:], video_to_frames(other))
    assert not grid[:, :, W:W + 2].any()  # black separator


def test_batch_over_reference_is_a_two_row_grid(clip: torch.Tensor, frames: np.ndarray) -> None:
    generated, reference = torch.stack([clip, clip.flip(-1)]), torch.stack([clip.flip(-2), 1 - clip])
    grid = video_to_frames(generated, reference=reference)
    assert grid.shape == (T, 2 * H + 2, 2 * W + 2, 3)
    np.testing.assert_array_equal(grid[:, :H, :W], frames)
    np.testing.assert_array_equal(grid[:, H + 2:, :W], video_to_frames(clip.flip(-2)))
    np.testing.assert_array_equal(grid[:, H + 2:, W + 2:], video_to_frames(1 - clip))
    with pytest.raises(ValueError, match=r"reference: expected the same shape .* received \(1, 12, 3, 96, 128\)"):
        video_to_frames(generated, reference=reference[:1])


@pytest.mark.parametrize(
    ("bad", "kwargs", "error", "pattern"),
    [
        (torch.zeros(3, 64), {}, ValueError, r"video: expected 4-D .* received shape \(3, 64\)"),
        (torch.zeros(1, 1, 4, 3, 8, 8), {}, ValueError, r"video: expected 4-D .* received shape \(1, 1, 4, 3"),
        (torch.zeros(4, 3, 8, 8), {"layout": "BTHWC"}, ValueError, r"video: expected 5-D \(B, T, H, W, C\)"),
        (torch.zeros(4, 3, 8, 8), {"layout": "NCHW"}, ValueError, r"layout: expected one of .* received 'NCHW'"),
        (torch.zeros(4, 3, 8, 8, dtype=torch.int32), {}, TypeError, r"video: expected dtype uint8 .* torch.int32"),
        (np.zeros((4, 3, 8, 8), np.complex64), {}, TypeError, r"video: expected dtype uint8 .* complex64"),
        (torch.zeros(4, 3, 8, 8, dtype=torch.bool), {}, TypeError, r"video: expected dtype uint8 .* torch.bool"),
        (torch.zeros(4, 2, 8, 8), {}, ValueError, r"video: expected C in \(1, 3\) .* \(C=2\)"),
        (torch.zeros(4, 4, 8, 8), {}, ValueError, r"expected C in \(1, 3\) .* \(C=4\) \(RGBA"),
        (np.zeros((4, 8, 8, 4)), {"layout": "THWC"}, ValueError, r"expected C in \(1, 3\) .* \(C=4\)"),
        (torch.zeros(0, 3, 8, 8), {}, ValueError, r"video: expected non-empty dimensions"),
        ([[1.0]], {}, TypeError, r"video: expected a torch.Tensor or numpy.ndarray .* received list"),
        (torch.full((4, 3, 8, 8), 1.5), {}, ValueError, r"expected values in value_range \[0, 1\], .* \[1.5, 1.5\]"),
        (torch.full((4, 3, 8, 8), -0.5), {}, ValueError, r"value_range=\(-1.0, 1.0\) for tanh"),
        (torch.full((4, 3, 8, 8), 2.0), {"value_range": (-1, 1)}, ValueError, r"value_range \[-1, 1\]"),
        (torch.full((4, 3, 8, 8), float("nan")), {}, ValueError, r"video: expected finite values .* NaN"),
        (torch.zeros(4, 3, 8, 8), {"value_range": (1, 0)}, ValueError, r"value_range: expected finite low < high"),
    ],
)
def test_bad_video_raises_naming_argument_expected_and_received(bad: object, kwargs: dict, error: type,
                                                               pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        video_to_frames(bad, **kwargs)  # type: ignore[arg-type]


def test_check_video_is_the_cheap_half(clip: torch.Tensor) -> None:
    check_video(clip * 7)  # values are the worker's business: only ndim, dtype and channels are checked here
    with pytest.raises(ValueError, match=r"samples: expected C in \(1, 3\)"):
        check_video(clip[:, :2], name="samples")
    with pytest.raises(ValueError, match="out of range|value_range"):
        video_to_frames(clip * 7)


def test_images_in_every_layout(clip: torch.Tensor) -> None:
    chw = clip[0]
    expected = (chw.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(image_to_array(chw), expected)
    np.testing.assert_array_equal(image_to_array(chw.permute(1, 2, 0).numpy()), expected)
    assert np.abs(image_to_array(chw * 2 - 1, value_range=(-1, 1)).astype(int) - expected).max() <= 1
    gray = image_to_array(chw[0])
    assert gray.shape == (H, W, 3) and (gray[..., 0] == gray[..., 2]).all()
    assert image_to_array(torch.zeros(3, 5, 3), layout="HWC").shape == (3, 5, 3)


def test_image_grid_of_a_batch(clip: torch.Tensor) -> None:
    batch = clip[:5]  # (5, 3, H, W), 2 per row -> 3 rows, the last with one empty (black) cell
    grid = make_image_grid(batch, nrow=2)
    assert grid.shape == (3 * H + 4, 2 * W + 2, 3)
    np.testing.assert_array_equal(grid[H + 2:2 * H + 2, W + 2:], image_to_array(batch[3]))
    assert not grid[2 * H + 4:, W + 2:].any()
    np.testing.assert_array_equal(image_to_array(batch, nrow=2), grid)
    assert make_image_grid(batch.permute(0, 2, 3, 1).numpy(), nrow=8, layout="BHWC").shape == (H, 5 * W + 8, 3)
    with pytest.raises(ValueError, match=r"nrow: expected an int >= 1, received 0"):
        make_image_grid(batch, nrow=0)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (torch.zeros(8), r"image: expected \(H, W\), \(C, H, W\), .* received shape \(8,\)"),
        (torch.zeros(4, 8, 8, dtype=torch.int64), r"image: expected dtype uint8 .* torch.int64"),
        (torch.zeros(2, 8, 8), r"image: expected C in \(1, 3\) .* \(C=2\)"),
        (torch.full((3, 8, 8), 1.2), r"image: expected values in value_range"),
    ],
)
def test_bad_image_raises(bad: torch.Tensor, pattern: str) -> None:
    with pytest.raises((TypeError, ValueError), match=pattern):
        image_to_array(bad)
    if bad.dtype == torch.int64 or bad.ndim == 1 or bad.shape[0] == 2:
        with pytest.raises((TypeError, ValueError), match=pattern):
            check_image(bad)


# ---------------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------------


def test_gif_decodes_to_the_clip(frames: np.ndarray) -> None:
    data = encode_gif(frames, fps=FPS)
    decoded, image = gif_frames(data)
    assert data[:6] == b"GIF89a" and len(decoded) == T
    # GIF stores delays in 10 ms steps: 125 ms per frame is written as 120 ms
    assert image.size == (W, H) and image.info["loop"] == 0 and image.info["duration"] == 120
    assert min(psnr(d, f) for d, f in zip(decoded, frames, strict=True)) > 25.0


def test_mp4_round_trip_through_read_video(frames: np.ndarray, tmp_path: Path) -> None:
    path = encode_mp4(frames, tmp_path / "clips" / "sample.mp4", fps=FPS)
    assert path == tmp_path / "clips" / "sample.mp4" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["sample.mp4"]  # no temporary file left behind
    video, fps = read_video(path)
    assert video.dtype == torch.uint8 and video.shape == (T, 3, H, W) and fps == FPS
    assert psnr(video.permute(0, 2, 3, 1).numpy(), frames) > 35.0
    assert video_info(path) == {"frames": T, "fps": FPS, "width": W, "height": H, "duration": T / FPS}


def test_odd_sizes_are_padded_to_even_by_edge_replication(tmp_path: Path) -> None:
    odd = video_to_frames(moving_clip(h=33, w=47))
    video, _ = read_video(encode_mp4(odd, tmp_path / "odd.mp4", fps=FPS))
    back = video.permute(0, 2, 3, 1).numpy()
    assert back.shape == (T, 34, 48, 3)
    assert psnr(back[:, :33, :47], odd) > 30.0  # a 33x47 frame holds steep gradients: 4:2:0 costs more
    assert psnr(back[:, 33, :47], odd[:, 32]) > 32.0  # the added row repeats the last row...
    assert psnr(back[:, :33, 47], odd[:, :, 46]) > 30.0  # ...and the added column the last column
    assert psnr(back[:, 33, :47], odd[:, 0]) < 20.0  # (not just any row)
    decoded, image = gif_frames(encode_gif(odd, fps=FPS))
    assert image.size == (47, 33) and len(decoded) == T


def test_mp4_keeps_fractional_rates_and_overwrites_atomically(frames: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "ntsc.mp4"
    path.write_bytes(b"old")
    encode_mp4(frames[:4], path, fps=30000 / 1001)
    assert video_info(path)["fps"] == pytest.approx(29.97, abs=1e-3)
    target_dir = tmp_path / "taken.mp4"
    target_dir.mkdir()  # the final rename cannot replace a directory: the write fails after encoding
    with pytest.raises(OSError):
        encode_mp4(frames[:4], target_dir, fps=FPS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ntsc.mp4", "taken.mp4"]


@pytest.mark.parametrize(
    ("bad", "fps", "pattern"),
    [
        (np.zeros((4, 8, 8, 3), np.float32), FPS, r"frames: expected a numpy uint8 array \(T, H, W, 3\).* float32"),
        (torch.zeros(4, 8, 8, 3, dtype=torch.uint8), FPS, r"frames: expected a numpy uint8 .* received Tensor"),
        (np.zeros((4, 3, 8, 8), np.uint8), FPS, r"frames: expected .* received shape \(4, 3, 8, 8\)"),
        (np.zeros((4, 8, 8, 3), np.uint8), 0, r"fps: expected a number in \(0, 1000\), received 0"),
    ],
)
def test_encoders_reject_bad_frames(bad: np.ndarray, fps: float, pattern: str, tmp_path: Path) -> None:
    with pytest.raises((TypeError, ValueError), match=pattern):
        encode_mp4(bad, tmp_path / "x.mp4", fps=fps)
    with pytest.raises((TypeError, ValueError), match=pattern):
        encode_gif(bad, fps=fps)
    assert not list(tmp_path.iterdir())


def test_png_is_lossless(frames: np.ndarray) -> None:
    data = encode_png(frames[3])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), frames[3])
    with pytest.raises(ValueError, match=r"image: expected a numpy uint8 array \(H, W, 3\)"):
        encode_png(frames)


def test_render_figure_draws_and_closes() -> None:
    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    fig.patch.set_facecolor((1.0, 0.0, 0.0))
    ax.set_axis_off()
    image = render_figure(fig)
    assert image.shape == (50, 100, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    assert fig.number not in plt.get_fignums()
    with pytest.raises(TypeError, match="fig: expected a matplotlib.figure.Figure, received ndarray"):
        render_figure(image)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


def test_read_video_window_and_resize(numbered_mp4: Path) -> None:
    video, fps = read_video(numbered_mp4, start_frame=2, num_frames=3)
    assert frame_indices(video) == [2, 3, 4] and fps == FPS
    video, _ = read_video(numbered_mp4, start_frame=9)
    assert frame_indices(video) == [9, 10, 11]
    video, _ = read_video(numbered_mp4, num_frames=2, size=(16, 20))
    assert video.shape == (2, 3, 16, 20) and video.is_contiguous()


def test_read_video_resamples_by_nearest_frame(numbered_mp4: Path) -> None:
    video, fps = read_video(numbered_mp4, start_frame=1, fps=4.0)
    assert fps == 4.0 and frame_indices(video) == [1, 3, 5, 7, 9, 11]
    video, fps = read_video(numbered_mp4, start_frame=2, num_frames=5, fps=16.0)
    assert fps == 16.0 and frame_indices(video) == [2, 3, 3, 4, 4]  # halves round up: 2, 2.5, 3, 3.5, 4
    video, _ = read_video(numbered_mp4, num_frames=3, fps=3.0)
    assert frame_indices(video) == [0, 3, 5]  # 8/3 = 2.67 source frames per output frame


def test_read_video_reads_gifs(frames: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "clip.gif"
    path.write_bytes(encode_gif(frames, fps=FPS))
    video, fps = read_video(path)
    assert video.shape == (T, 3, H, W) and fps == pytest.approx(1000 / 120)  # GIF delays are in 10 ms steps
    assert psnr(video.permute(0, 2, 3, 1).numpy(), frames) > 25.0


def test_read_video_errors_name_the_problem(numbered_mp4: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match=r"path: expected an existing video file, received .*missing.mp4"):
        read_video(missing)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        video_info(missing)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    with pytest.raises(ValueError, match=r"path: expected a video file PyAV can read, received .*notes.mp4"):
        read_video(text)
    audio_only = tmp_path / "audio.wav"
    audio_only.write_bytes(_silent_wav())
    with pytest.raises(ValueError, match=r"expected a file with a video stream, received .*audio.wav"):
        read_video(audio_only)
    with pytest.raises(ValueError, match=r"start_frame: expected an index inside the video .* received 12"):
        read_video(numbered_mp4, start_frame=12)
    with pytest.raises(ValueError, match=r"start_frame: .* received 15 \(the video has 12 frames\)"):
        read_video(numbered_mp4, start_frame=15, fps=4.0)
    with pytest.raises(ValueError, match=r"num_frames: expected at most the 2 frames available .* received 3"):
        read_video(numbered_mp4, start_frame=10, num_frames=3)
    for kwargs, pattern in [({"start_frame": -1}, "start_frame: expected an int >= 0, received -1"),
                            ({"num_frames": 0}, "num_frames: expected None or an int >= 1, received 0"),
                            ({"fps": -2.0}, r"fps: expected None or a finite number > 0, received -2.0"),
                            ({"size": (16,)}, r"size: expected None or \(height, width\) .* received \(16,\)")]:
        with pytest.raises(ValueError, match=pattern):
            read_video(numbered_mp4, **kwargs)


def _silent_wav() -> bytes:
    """A valid media file with no video stream: 10 ms of 8 kHz mono silence."""
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 80)
    return buffer.getvalue()


def test_read_video_reads_webm_without_a_frame_count_in_the_header(tmp_path: Path) -> None:
    import av

    path = tmp_path / "numbered.webm"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libvpx-vp9", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(6):
            frame = np.full((32, 48, 3), 20 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    assert video_info(path)["frames"] == 6 and video_info(path)["fps"] == 10.0
    video, fps = read_video(path, start_frame=1, fps=5.0)
    assert fps == 5.0 and frame_indices(video) == [1, 3, 5]
