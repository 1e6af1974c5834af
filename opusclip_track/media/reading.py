"""Reading video files with PyAV: `video_info` (no decoding) and `read_video` (uint8 RGB frames).

Any file PyAV reads (mp4, gif, webm, avi, ...). Errors name the path and say what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from opusclip_track._checks import argument_error, check_int, is_int, is_number

PathLike = str | os.PathLike[str]



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
