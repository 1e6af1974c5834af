"""Media: video/image tensors -> uint8 frames, MP4 (PyAV) / GIF / PNG encoding, and reading video files.

Everything here needs only PyAV and Pillow (no moviepy). The tracker splits the work in two: the caller's
thread runs the O(1) checks (`check_video`, `check_image`), the background worker does the conversion and
encoding (`video_to_frames`, `encode_mp4`, `encode_gif`, ...).
"""

from __future__ import annotations

import io
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import av
import numpy as np
import torch
from PIL import Image

from opusclip_track._checks import (
    ValueRange,
    argument_error,
    check_bounds,
    check_int,
    check_value_range,
    is_int,
    is_number,
)
from opusclip_track._files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "check_image", "check_video", "encode_gif", "encode_mp4", "encode_png", "image_to_array",
    "make_image_grid", "read_video", "render_figure", "video_info", "video_to_frames",
]

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------------------------------
# Reading video files
# ----------------------------------------------------------------------------------------------------


def _open_video(path: PathLike) -> tuple[Any, Any]:
    """Open `path` with PyAV and return (container, first video stream), with errors naming the path."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: expected an existing video file, received {str(p)!r} (no such file)")
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"path: expected a video file PyAV can read, received {str(p)!r} ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise ValueError(f"path: expected a file with a video stream, received {str(p)!r} (no video stream)")
    return container, container.streams.video[0]


def _stream_fps(stream: Any) -> float:
    """Frame rate of a video stream; GIFs and some WebMs only have a guessed or time-base rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return 25.0  # FFmpeg's own default when a container states no rate at all


def _count_frames(container: Any, stream: Any) -> int:
    """Frame count from the header, else by demuxing packets (no decoding)."""
    if stream.frames > 0:
        return int(stream.frames)
    n = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0)
    return n


def video_info(path: PathLike) -> dict[str, float | int]:
    """Describe a video file without decoding it.

    Args:
        path: any file PyAV can read (mp4, gif, webm, ...).

    Returns:
        ``{"frames", "fps", "width", "height", "duration"}``; duration in seconds (``frames / fps`` when the
        container does not state it).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a readable video.
    """
    container, stream = _open_video(path)
    try:
        fps = _stream_fps(stream)
        frames = _count_frames(container, stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = frames / fps
        return {"frames": frames, "fps": fps, "width": int(stream.codec_context.width),
                "height": int(stream.codec_context.height), "duration": duration}
    finally:
        container.close()


def _check_read_args(start_frame: int, num_frames: int | None, fps: float | None,
                     size: tuple[int, int] | None) -> None:
    check_int("start_frame", start_frame, minimum=0)
    if num_frames is not None and (not is_int(num_frames) or num_frames < 1):
        raise argument_error("num_frames", "None or an int >= 1", num_frames)
    if fps is not None and (not is_number(fps, finite=True) or not fps > 0):
        raise argument_error("fps", "None or a finite number > 0", fps)
    if size is not None and not (isinstance(size, tuple | list) and len(size) == 2
                                 and all(is_int(s) and s > 0 for s in size)):
        raise argument_error("size", "None or (height, width) of positive ints", size)


def _source_indices(start_frame: int, num_frames: int | None, src_fps: float, fps: float | None,
                    total: int | None) -> np.ndarray | None:
    """Source frame indices to keep, or None for "every frame from start_frame to the end".

    With `fps`, output frame k shows the source frame nearest to time k / fps after `start_frame`.
    """
    if fps is None:
        return None if num_frames is None else np.arange(start_frame, start_frame + num_frames)
    step = src_fps / fps
    if num_frames is None:
        assert total is not None
        num_frames = int(np.floor((total - 1 - start_frame) / step + 1e-9)) + 1
    # floor(x + 0.5) rounds halves up (np.round rounds them to even, which would skip frames unevenly).
    return start_frame + np.floor(np.arange(num_frames) * step + 0.5).astype(np.int64)


def read_video(
    path: PathLike,
    *,
    start_frame: int = 0,
    num_frames: int | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, float]:
    """Decode a video file into uint8 RGB frames.

    Args:
        path: any file PyAV can read (mp4, gif, webm, avi, ...).
        start_frame: index of the first source frame of the clip.
        num_frames: how many frames to return (after resampling); None reads to the end. Asking for more
            frames than the file holds after `start_frame` is an error (a clip is never silently short).
        fps: resample to this frame rate by nearest-frame selection (frames are repeated or dropped,
            never blended; source frame times are index / the stream's average rate); None keeps the source
            rate.
        size: ``(height, width)`` to resize every frame to (bilinear, by FFmpeg's swscale); None keeps it.

    Returns:
        ``(frames, fps)``: a uint8 tensor ``(T, 3, H, W)`` and the frame rate of the returned frames.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a readable video, an argument is invalid, or the file is too short.

    Example:
        >>> clip, rate = read_video("sample.mp4", start_frame=8, num_frames=16, fps=8, size=(128, 128))
    """
    _check_read_args(start_frame, num_frames, fps, size)
    container, stream = _open_video(path)
    try:
        src_fps = _stream_fps(stream)
        total = _count_frames(container, stream) if fps is not None and num_frames is None else None
        if total is not None and start_frame >= total:
            raise ValueError(f"start_frame: expected an index inside the video {str(path)!r}, received "
                             f"{start_frame} (the video has {total} frames)")
        wanted = _source_indices(start_frame, num_frames, src_fps, fps, total)
        frames = _decode_frames(container, stream, start_frame, wanted, size)
    except av.error.FFmpegError as exc:
        raise ValueError(f"path: expected a decodable video, received {str(path)!r} ({exc})") from exc
    finally:
        container.close()
    _check_enough(path, frames, start_frame, wanted)
    out_fps = float(fps) if fps is not None else src_fps
    # (T, H, W, 3) frames -> one contiguous (T, 3, H, W) array in a single copy (numpy: single-threaded)
    video = np.empty((len(frames), 3, *frames[0].shape[:2]), dtype=np.uint8)
    for out, frame in zip(video, frames, strict=True):
        out[...] = frame.transpose(2, 0, 1)
    return torch.from_numpy(video), out_fps


def _decode_frames(container: Any, stream: Any, start_frame: int, wanted: np.ndarray | None,
                   size: tuple[int, int] | None) -> list[np.ndarray]:
    """Decode sequentially, converting only the frames in `wanted` (a frame may be wanted several times)."""
    stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg; the GIL is released while decoding
    reformat: dict[str, Any] = {"format": "rgb24"}
    if size is not None:
        reformat.update(height=size[0], width=size[1], interpolation="BILINEAR")
    out: list[np.ndarray] = []
    if wanted is None:
        for index, frame in enumerate(container.decode(stream)):
            if index >= start_frame:
                out.append(frame.to_ndarray(**reformat))
        return out
    counts, last = np.bincount(wanted), int(wanted[-1])
    for index, frame in enumerate(container.decode(stream)):
        if index < len(counts) and counts[index]:
            out.extend([frame.to_ndarray(**reformat)] * int(counts[index]))
        if index >= last:
            break
    return out


def _check_enough(path: PathLike, frames: list[np.ndarray], start_frame: int,
                  wanted: np.ndarray | None) -> None:
    expected = len(wanted) if wanted is not None else 1
    if len(frames) < expected:
        if wanted is None or not frames and start_frame > 0:
            raise ValueError(f"start_frame: expected an index inside the video {str(path)!r}, received "
                             f"{start_frame} (the video has fewer frames)")
        raise ValueError(f"num_frames: expected at most the {len(frames)} frames available in {str(path)!r} "
                         f"from start_frame {start_frame} at the requested rate, received {len(wanted)}")


# ----------------------------------------------------------------------------------------------------
# Tensors and arrays -> uint8 frames
# ----------------------------------------------------------------------------------------------------

VideoLayout = Literal["TCHW", "BTCHW", "THWC", "BTHWC"]
ImageLayout = Literal["HW", "CHW", "HWC", "BCHW", "BHWC"]
ArrayLike = torch.Tensor | np.ndarray

_VIDEO_LAYOUTS: tuple[str, ...] = ("TCHW", "BTCHW", "THWC", "BTHWC")
_IMAGE_LAYOUTS: tuple[str, ...] = ("HW", "CHW", "HWC", "BCHW", "BHWC")
_CHANNELS = (1, 3)
# Pixels of black between the cells of a grid (clips side by side, generated over reference, image grids).
GRID_PADDING = 2


def _check_array(x: Any, *, name: str, expected: str) -> None:
    """Type and dtype: a torch tensor or numpy array, uint8 or floating point."""
    if isinstance(x, torch.Tensor):
        ok = x.dtype == torch.uint8 or x.is_floating_point()
    elif isinstance(x, np.ndarray):
        ok = x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)
    else:
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray {expected}, "
                        f"received {type(x).__name__}")
    if not ok:
        raise TypeError(f"{name}: expected dtype uint8 (0-255) or floating point (in value_range), "
                        f"received {x.dtype}")


def _check_layout_shape(x: ArrayLike, layout: str, *, name: str) -> None:
    """ndim against the layout, channel count in (1, 3), no empty dimension."""
    shape = tuple(x.shape)
    if len(shape) != len(layout):
        raise ValueError(f"{name}: expected {len(layout)}-D ({', '.join(layout)}) for layout={layout!r}, "
                         f"received shape {shape}")
    channels = shape[layout.index("C")] if "C" in layout else 1
    if channels not in _CHANNELS:
        hint = " (RGBA? drop the alpha channel)" if channels == 4 else ""
        raise ValueError(f"{name}: expected C in {_CHANNELS} for layout {layout!r}, received shape {shape} "
                         f"(C={channels}){hint}")
    if 0 in shape:
        raise ValueError(f"{name}: expected non-empty dimensions, received shape {shape}")


def _video_layout(video: ArrayLike, layout: VideoLayout | None, name: str) -> str:
    if layout is None:
        if video.ndim not in (4, 5):
            raise ValueError(f"{name}: expected 4-D (T, C, H, W) or 5-D (B, T, C, H, W) (pass layout='THWC' "
                             f"or 'BTHWC' for channels-last), received shape {tuple(video.shape)}")
        return "TCHW" if video.ndim == 4 else "BTCHW"
    if layout not in _VIDEO_LAYOUTS:
        raise ValueError(f"layout: expected one of {_VIDEO_LAYOUTS} or None, received {layout!r}")
    return layout


def _image_layout(image: ArrayLike, layout: ImageLayout | None, name: str) -> str:
    if layout is not None:
        if layout not in _IMAGE_LAYOUTS:
            raise ValueError(f"layout: expected one of {_IMAGE_LAYOUTS} or None, received {layout!r}")
        return layout
    shape = tuple(image.shape)
    if len(shape) == 3:
        # Channels-first wins ties such as (3, 64, 3): it is PyTorch's convention.
        return "CHW" if shape[0] in _CHANNELS or shape[-1] not in _CHANNELS else "HWC"
    if len(shape) in (2, 4):
        return "HW" if len(shape) == 2 else "BCHW"
    raise ValueError(f"{name}: expected (H, W), (C, H, W), (H, W, C) or (B, C, H, W), received shape {shape}")


def check_video(video: ArrayLike, *, layout: VideoLayout | None = None, name: str = "video") -> None:
    """Cheap checks for the caller's thread: type, ndim, dtype, channel count. O(1), never reads the data.

    Args:
        video: torch tensor or numpy array; `(T, C, H, W)`, `(B, T, C, H, W)`, or channels-last with `layout`.
        layout: `"TCHW"`, `"BTCHW"`, `"THWC"` or `"BTHWC"`; None infers 4-D as TCHW and 5-D as BTCHW.
        name: the argument's name in error messages.

    Raises:
        TypeError: not a tensor/array, or a dtype other than uint8 or floating point.
        ValueError: wrong number of dimensions, C not in (1, 3), or an empty dimension.
    """
    _check_array(video, name=name, expected="(T, C, H, W) or (B, T, C, H, W)")
    _check_layout_shape(video, _video_layout(video, layout, name), name=name)


def check_image(image: ArrayLike, *, layout: ImageLayout | None = None, name: str = "image") -> None:
    """Cheap checks for the caller's thread, like `check_video`, for `(H, W)`, `(C, H, W)`, `(H, W, C)` or
    a batch `(B, C, H, W)`. With `layout=None` a 3-D image is channels-first when its first dimension is
    1 or 3, else channels-last; pass `layout` to decide explicitly.
    """
    _check_array(image, name=name, expected="(H, W), (C, H, W), (H, W, C) or (B, C, H, W)")
    _check_layout_shape(image, _image_layout(image, layout, name), name=name)


def _to_canonical(x: ArrayLike, layout: str, canonical: str) -> np.ndarray:
    """A numpy view (a copy only off-CPU) in the `canonical` axis order; missing axes become size-1 dims."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16
            x = x.float()
        x = x.cpu().numpy()
    for axis in canonical:
        if axis not in layout:
            x, layout = x[None], axis + layout
    return x.transpose([layout.index(axis) for axis in canonical])


# The worker converts with numpy on purpose: it is single-threaded, so encoding never competes with the training
# loop for torch's intra-op threads (on a busy 2-core machine, torch's 2-thread elementwise ops ran ~80x slower
# than one thread).
def _to_uint8(x: np.ndarray, value_range: ValueRange, *, name: str) -> np.ndarray:
    """uint8 passes through; floats are range-checked and scaled to 0-255 with rounding."""
    if x.dtype == np.uint8:
        return x
    low, high = check_value_range(value_range)
    check_bounds(float(x.min()), float(x.max()), name=name, low=low, high=high)
    work = np.subtract(x, low, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    work *= 255.0 / (high - low)
    np.clip(work, 0.0, 255.0, out=work)
    work += 0.5  # then truncation rounds half up
    return work.astype(np.uint8)


def _tile(cells: np.ndarray, padding: int) -> np.ndarray:
    """Lay out uint8 cells `(..., R, K, C, H, W)` as an RGB grid `(..., R*H + (R-1)*p, K*W + (K-1)*p, 3)`.

    One strided copy: gray (C=1) broadcasts to 3 channels in the same assignment.
    """
    *lead, rows, cols, _, height, width = cells.shape
    ph, pw = (padding if rows > 1 else 0), (padding if cols > 1 else 0)
    out = np.zeros((*lead, rows, height + ph, cols, width + pw, 3), dtype=np.uint8)
    n = len(lead)
    out[..., :height, :, :width, :] = cells.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    grid = out.reshape(*lead, rows * (height + ph), cols * (width + pw), 3)
    if ph or pw:  # padding goes between cells only: drop the trailing row/column of it
        grid = np.ascontiguousarray(grid[..., : grid.shape[-3] - ph, : grid.shape[-2] - pw, :])
    return grid


def video_to_frames(
    video: ArrayLike,
    *,
    layout: VideoLayout | None = None,
    value_range: ValueRange = (0.0, 1.0),
    reference: ArrayLike | None = None,
    padding: int = GRID_PADDING,
    name: str = "video",
) -> np.ndarray:
    """Convert a clip or a batch of clips to uint8 RGB frames ready to encode (runs on the worker).

    A batch `(B, T, C, H, W)` becomes one clip of the B clips side by side; with `reference` (same shape and
    layout) the generated row sits above the reference row. Cells are separated by `padding` black pixels,
    so the output is ``(T, R*H + (R-1)*padding, B*W + (B-1)*padding, 3)`` with R = 2 with a reference, else 1.

    Args:
        video: torch tensor (any device) or numpy array in `layout`; uint8 0-255 or float in `value_range`.
        layout: see `check_video`; None infers 4-D TCHW / 5-D BTCHW.
        value_range: `(0.0, 1.0)` or `(-1.0, 1.0)` (any low < high) for float input; ignored for uint8.
        reference: optional ground truth shown under `video`.
        padding: black pixels between grid cells.
        name: the argument's name in error messages.

    Returns:
        numpy uint8 array `(T, H', W', 3)`, C-contiguous; 1-channel input is replicated to gray RGB.

    Raises:
        TypeError, ValueError: as `check_video`, plus float values outside `value_range` (beyond 0.1% slop),
            NaN, or a reference whose shape differs.

    Example:
        >>> video_to_frames(torch.rand(2, 16, 3, 64, 64), reference=torch.rand(2, 16, 3, 64, 64)).shape
        (16, 130, 130, 3)
    """
    check_video(video, layout=layout, name=name)
    lay = _video_layout(video, layout, name)
    cells = _to_uint8(_to_canonical(video, lay, "BTCHW"), value_range, name=name)[None]  # (1, B, T, C, H, W)
    if reference is not None:
        check_video(reference, layout=layout, name="reference")
        if tuple(reference.shape) != tuple(video.shape):
            raise ValueError(f"reference: expected the same shape as {name} {tuple(video.shape)}, "
                             f"received {tuple(reference.shape)}")
        ref = _to_uint8(_to_canonical(reference, lay, "BTCHW"), value_range, name="reference")
        cells = np.concatenate([cells, ref[None]])
    return _tile(cells.transpose(2, 0, 1, 3, 4, 5), padding)  # (T, R, B, C, H, W) -> (T, H', W', 3)


def make_image_grid(
    images: ArrayLike,
    nrow: int = 8,
    *,
    layout: Literal["BCHW", "BHWC"] = "BCHW",
    value_range: ValueRange = (0.0, 1.0),
    padding: int = GRID_PADDING,
    name: str = "images",
) -> np.ndarray:
    """Tile a batch of images into one uint8 RGB image, `nrow` images per row (like torchvision's).

    Returns:
        ``(rows*H + (rows-1)*padding, K*W + (K-1)*padding, 3)`` uint8 with K = min(nrow, B) and
        rows = ceil(B / K); empty cells of the last row are black.

    Raises:
        TypeError, ValueError: as `check_image`, plus out-of-range floats and `nrow` < 1.
    """
    check_int("nrow", nrow, minimum=1)
    check_image(images, layout=layout, name=name)
    batch = _to_uint8(_to_canonical(images, layout, "BCHW"), value_range, name=name)
    cols = min(nrow, batch.shape[0])
    rows = -(-batch.shape[0] // cols)
    if rows * cols > batch.shape[0]:
        batch = np.concatenate([batch, np.zeros((rows * cols - batch.shape[0], *batch.shape[1:]), np.uint8)])
    return _tile(batch.reshape(rows, cols, *batch.shape[1:]), padding)


def image_to_array(
    image: ArrayLike,
    *,
    layout: ImageLayout | None = None,
    value_range: ValueRange = (0.0, 1.0),
    nrow: int = 8,
    name: str = "image",
) -> np.ndarray:
    """Convert an image (or a batch, as a grid of `nrow` per row) to a uint8 RGB array `(H, W, 3)`.

    Args:
        image: torch tensor or numpy array, `(H, W)`, `(C, H, W)`, `(H, W, C)` or `(B, C, H, W)`;
            uint8 or float in `value_range`; C in (1, 3).
        layout: see `check_image`.
        value_range: range of float input.
        nrow: images per row when `image` is a batch.
        name: the argument's name in error messages.
    """
    check_image(image, layout=layout, name=name)
    lay = _image_layout(image, layout, name)
    if lay in ("BCHW", "BHWC"):
        return make_image_grid(image, nrow, layout=lay, value_range=value_range, name=name)  # type: ignore[arg-type]
    chw = _to_uint8(_to_canonical(image, lay, "CHW"), value_range, name=name)
    return _tile(chw[None, None], 0)


# ----------------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------------

# x264 quality: at crf 16 the loss is mostly 4:2:0 chroma subsampling itself (> 35 dB on smooth motion, files
# ~15% larger than crf 18); "veryfast" encodes a 16-frame 128x128 clip in a few ms and costs < 0.5 dB.
MP4_CRF = 16
MP4_PRESET = "veryfast"
# Browsers play GIF delays under 20 ms at 100 ms, so faster clips would play slower: cap at 50 fps.
GIF_MIN_FRAME_MS = 20


def _check_uint8_rgb(x: np.ndarray, *, name: str, axes: str, producer: str) -> None:
    """Encoders take what the converters return: numpy uint8 `(T, H, W, 3)` frames or an `(H, W, 3)` image."""
    expected = f"a numpy uint8 array ({', '.join(axes)}, 3) (see {producer})"
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        received = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name}: expected {expected}, received {received}")
    if x.ndim != len(axes) + 1 or x.shape[-1] != 3 or 0 in x.shape:
        raise ValueError(f"{name}: expected {expected}, non-empty, received shape {tuple(x.shape)}")


def _check_fps(fps: float) -> None:
    if not is_number(fps) or not (0 < fps < 1000):
        raise argument_error("fps", "a number in (0, 1000)", fps)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: replicate the last row/column (keeps every input pixel)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def encode_mp4(frames: np.ndarray, path: PathLike, fps: float) -> Path:
    """Encode frames to an H.264 MP4 (libx264, yuv420p, crf 16) that browsers and W&B play.

    Odd widths/heights are padded to even by replicating the last row/column, so the file may be one pixel
    larger than the input in each dimension. The file is written under a temporary name in the same folder,
    fsynced and renamed into place (`_files.atomic_path`): `path` is either absent or complete, never
    half-written, also after a crash.

    Args:
        frames: numpy uint8 `(T, H, W, 3)` RGB (`video_to_frames` output).
        path: destination file; its folder is created if missing.
        fps: frame rate (fractional rates such as 29.97 are kept exactly to 1/1001).

    Returns:
        `path` as a `Path`.
    """
    _check_uint8_rgb(frames, name="frames", axes="THW", producer="video_to_frames")
    _check_fps(fps)
    with atomic_path(path) as tmp:
        _write_mp4(_pad_to_even(frames), tmp, Fraction(fps).limit_denominator(1001))
    return Path(path)


def _write_mp4(frames: np.ndarray, path: Path, rate: Fraction) -> None:
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(MP4_CRF), "preset": MP4_PRESET}
        for frame in frames:
            # Area-averaged chroma (+0.4 dB over swscale's default); the GIL is released inside FFmpeg.
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            container.mux(stream.encode(rgb.reformat(format="yuv420p", interpolation="AREA")))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """Encode frames to an animated GIF (looping forever) with Pillow; plays in TensorBoard's Images tab.

    Each frame gets its own 256-colour palette (Pillow's fast octree: ~20x faster than median cut at the same
    size, ~30 dB on smooth gradients). Frame delay is 1000/fps ms, at least 20 ms (browsers slow shorter
    delays down), and GIF stores it in 10 ms steps. Pillow merges identical consecutive frames into one
    longer frame, so a reader may see fewer frames than T; the playback timing is the same.

    Args:
        frames: numpy uint8 `(T, H, W, 3)` RGB.
        fps: frame rate.
    """
    _check_uint8_rgb(frames, name="frames", axes="THW", producer="video_to_frames")
    _check_fps(fps)
    images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(GIF_MIN_FRAME_MS, round(1000.0 / fps)), disposal=1)
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    """Encode an `(H, W, 3)` uint8 image (`image_to_array` output) as PNG bytes (fast zlib level 3)."""
    _check_uint8_rgb(image, name="image", axes="HW", producer="image_to_array")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def render_figure(fig: Figure, *, close: bool = True) -> np.ndarray:
    """Render a matplotlib figure to an `(H, W, 3)` uint8 array with the Agg canvas (no GUI needed).

    Works on any thread and whatever pyplot's backend is: the figure gets its own Agg canvas. With `close`
    (the default) the figure is closed afterwards so pyplot does not keep it alive.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as _Figure

    if not isinstance(fig, _Figure):
        raise TypeError(f"fig: expected a matplotlib.figure.Figure, received {type(fig).__name__}")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if close and "matplotlib.pyplot" in sys.modules:  # only pyplot keeps figures alive; never import it here
        sys.modules["matplotlib.pyplot"].close(fig)
    return rgb
