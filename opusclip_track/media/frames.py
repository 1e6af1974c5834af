"""Tensors and arrays -> uint8 RGB frames: the checks the caller's thread runs and the conversions the worker runs.

`check_video` / `check_image` are O(1) (type, ndim, dtype, channels); `video_to_frames`, `make_image_grid` and
`image_to_array` read the data, check its value range, scale it to 0-255 and tile batches into grids.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from opusclip_track._checks import ValueRange, check_bounds, check_int, check_value_range

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
