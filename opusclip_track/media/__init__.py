"""Media: video/image tensors -> uint8 frames, MP4 (PyAV) / GIF / PNG encoding, and reading video files.

Everything here needs only PyAV and Pillow (no moviepy). The tracker splits the work in two: the caller's
thread runs the O(1) checks (`check_video`, `check_image`), the background worker does the conversion and
encoding (`video_to_frames`, `encode_mp4`, `encode_gif`, ...). Three modules, one step each:
`reading.py` (files -> frames), `frames.py` (tensors -> uint8 frames and grids), `encoding.py` (frames ->
MP4, GIF, PNG).
"""

from opusclip_track.media.encoding import (
    GIF_MIN_FRAME_MS,
    MP4_CRF,
    MP4_PRESET,
    encode_gif,
    encode_mp4,
    encode_png,
    render_figure,
)
from opusclip_track.media.frames import (
    GRID_PADDING,
    ArrayLike,
    ImageLayout,
    VideoLayout,
    check_image,
    check_video,
    image_to_array,
    make_image_grid,
    video_to_frames,
)
from opusclip_track.media.reading import PathLike, read_video, video_info

__all__ = [
    "check_image", "check_video", "encode_gif", "encode_mp4", "encode_png", "image_to_array",
    "make_image_grid", "read_video", "render_figure", "video_info", "video_to_frames",
    # types and settings
    "ArrayLike", "GIF_MIN_FRAME_MS", "GRID_PADDING", "ImageLayout", "MP4_CRF", "MP4_PRESET", "PathLike",
    "VideoLayout",
]
