"""SSIM (Wang et al., 2004) of generated against reference videos: per frame, averaged over frames and clips.

The protocol is scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=...)`: an 11-tap Gaussian window (sigma 1.5,
truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, population (co)variances, and the SSIM map averaged over the
pixels at least 5 away from every border and then over channels. Because those border pixels are dropped,
scikit-image's 'reflect' padding never reaches the average, and a 'valid' convolution (no padding) gives
the same numbers with less work.

Speed: frames are filtered in batches on their device, with the five maps (x, y, x², y², xy) stacked as
channels of one depthwise convolution, split into two 1-D passes, in channels-last memory layout (several
times faster than the default layout on CPU), in chunks that stay in cache on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from opusclip_track._checks import ValueRange
from opusclip_track.metrics._framewise import FramewiseMetric, frame_curve, frame_mean
from opusclip_track.metrics._input import frames, prepare_pair

SIGMA = 1.5
TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's default, which scikit-image uses
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 5
WIN_SIZE = 2 * RADIUS + 1  # 11
K1 = 0.01
K2 = 0.03
_C1 = K1**2  # data range 1 after prepare_videos
_C2 = K2**2
_MAPS = 5  # x, y, x², y², xy


def ssim_protocol() -> dict[str, float | int | str]:
    """The SSIM settings, to store with a run so that numbers are comparable across runs."""
    return {"window": "gaussian", "sigma": SIGMA, "win_size": WIN_SIZE, "k1": K1, "k2": K2,
            "covariance": "population", "border": f"crop {RADIUS} px (as scikit-image)", "data_range": 1.0}


def _gaussian_taps(dtype: torch.dtype, device: torch.device) -> Tensor:
    offsets = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / SIGMA) ** 2)
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def _filter_valid(maps: Tensor, taps: Tensor) -> Tensor:
    """Gaussian-filter each channel of channels-last `(N, K, H, W)` maps: `(N, K, H - 10, W - 10)`, no padding."""
    groups = maps.shape[1]
    maps = F.conv2d(maps, taps.view(1, 1, 1, WIN_SIZE).expand(groups, 1, 1, WIN_SIZE), groups=groups)
    return F.conv2d(maps, taps.view(1, 1, WIN_SIZE, 1).expand(groups, 1, WIN_SIZE, 1), groups=groups)


def _frames_per_chunk(x: Tensor) -> int:
    # On CPU the work is memory-bound: chunks whose five stacked float32 maps take ~2 MB (near L2 size) ran
    # 2x faster than one pass over 16 frames of 3x128x128, and faster than 1 or 4 frames at a time. On a GPU
    # the chunk only bounds memory (~2 GB of maps).
    budget = (1 << 19) if x.device.type == "cpu" else (1 << 29)
    return max(1, budget // (_MAPS * x[0].numel()))


def _ssim_frames(x: Tensor, y: Tensor, taps: Tensor) -> Tensor:
    """Per-frame SSIM of `(N, C, H, W)` frames in [0, 1]: `(N,)` in the frames' dtype."""
    frames_, channels, height, width = x.shape
    # Variances are E[x²] - E[x]²; subtracting each frame's mean first keeps that difference well
    # conditioned in float32 (SSIM's (co)variance terms do not change under a shift).
    x_mean = x.mean(dim=(2, 3), keepdim=True)
    y_mean = y.mean(dim=(2, 3), keepdim=True)
    # The five maps x, y, x², y², xy are written straight into one channels-last buffer: one depthwise
    # convolution filters them all, and no concatenation or layout copy is needed.
    maps = torch.empty(frames_, _MAPS * channels, height, width, dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)
    xc, yc, xx, yy, xy = maps.split(channels, dim=1)
    torch.sub(x, x_mean, out=xc)
    torch.sub(y, y_mean, out=yc)
    torch.mul(xc, xc, out=xx)
    torch.mul(yc, yc, out=yy)
    torch.mul(xc, yc, out=xy)
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(maps, taps).split(channels, dim=1)
    cov_xy = e_xy - mu_x * mu_y
    var_sum = e_xx + e_yy - mu_x * mu_x - mu_y * mu_y
    mu_x = mu_x + x_mean
    mu_y = mu_y + y_mean
    ssim_map = ((2 * mu_x * mu_y + _C1) * (2 * cov_xy + _C2)
                / ((mu_x * mu_x + mu_y * mu_y + _C1) * (var_sum + _C2)))
    # Mean over pixels then channels, as scikit-image does with channel_axis.
    return ssim_map.mean(dim=(1, 2, 3))


def _ssim_update(gen: Tensor, ref: Tensor) -> Tensor:
    """Per-frame SSIM of prepared `(B, T, C, H, W)` videos in [0, 1]: `(B, T)` float64."""
    batch, steps, _, height, width = gen.shape
    if min(height, width) < WIN_SIZE:
        raise ValueError(f"generated: expected frames of at least {WIN_SIZE}x{WIN_SIZE} pixels for SSIM's "
                         f"{WIN_SIZE}-tap window, received {height}x{width}")
    x, y = frames(gen), frames(ref)  # (N, C, H, W)
    taps = _gaussian_taps(x.dtype, x.device)
    chunk = _frames_per_chunk(x)
    scores = [_ssim_frames(x[i:i + chunk], y[i:i + chunk], taps) for i in range(0, x.shape[0], chunk)]
    return torch.cat(scores).to(torch.float64).view(batch, steps)


def ssim(generated: Tensor, reference: Tensor, *, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """Structural similarity, computed per frame and averaged over all frames of all clips.

    Both videos are mapped to [0, 1] first (data range 1; uint8 frames give the same number as scikit-image
    with `data_range=255`). Each frame's SSIM is its SSIM map averaged over pixels (borders of 5 px
    cropped) and channels; see the module docstring for the exact protocol (`ssim_protocol()`).

    Args:
        generated: `(B, T, C, H, W)` or `(T, C, H, W)` videos, uint8 or float in `value_range`;
            frames at least 11x11.
        reference: the same shape as `generated`.
        value_range: `(low, high)` of float inputs.

    Returns:
        float64 scalar tensor in [-1, 1]. Higher is better.
    """
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    return frame_mean(_ssim_update(gen, ref), name="ssim")


def ssim_per_frame(generated: Tensor, reference: Tensor, *, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """SSIM at each timestep, averaged over clips: a float64 `(T,)` curve over the generated horizon.

    Arguments as in `ssim`.
    """
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    return frame_curve(_ssim_update(gen, ref), name="ssim_per_frame")


class SSIM(FramewiseMetric):
    """Streaming SSIM: `update(generated, reference)` per batch, `compute()` the mean over every frame seen,
    `compute_curve()` the `(T,)` per-timestep mean, `reset()` to start over. Same math as `ssim`.
    """

    higher_is_better = True
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0
    _score_fn = staticmethod(_ssim_update)
