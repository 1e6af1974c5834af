"""PSNR of generated against reference videos: per frame, then averaged over frames and clips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from opusclip_track._checks import ValueRange
from opusclip_track.metrics._framewise import FramewiseMetric, frame_curve, frame_mean
from opusclip_track.metrics._input import prepare_pair

# A frame copied exactly (e.g. a conditioning frame in video prediction) has MSE 0 and an infinite PSNR,
# which would make the whole average infinite; flooring the MSE caps one frame at 100 dB instead.
MSE_FLOOR = 1e-10


def _psnr_update(gen: Tensor, ref: Tensor) -> Tensor:
    """Per-frame PSNR (dB) of prepared `(B, T, C, H, W)` videos in [0, 1] (peak 1): `(B, T)` float64."""
    # mse_loss fuses the difference and the square (one pass less than (gen - ref) ** 2); float32
    # accumulation (pairwise summation) is accurate to ~1e-6 dB, where a float64 reduction would first copy
    # every pixel to float64.
    mse = F.mse_loss(gen, ref, reduction="none").mean(dim=(2, 3, 4))
    return -10.0 * torch.log10(mse.to(torch.float64).clamp_min(MSE_FLOOR))


def psnr(generated: Tensor, reference: Tensor, *, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """Peak signal-to-noise ratio in dB, computed per frame and averaged over all frames of all clips.

    Each frame's MSE is taken over its channels and pixels after mapping both videos to [0, 1] (so the peak
    is 1, equivalent to `data_range` 255 on uint8 or 2 on [-1, 1]); the frame's PSNR is `-10 log10(MSE)`,
    capped at 100 dB for identical frames. Matches `skimage.metrics.peak_signal_noise_ratio` per frame.

    Args:
        generated: `(B, T, C, H, W)` or `(T, C, H, W)` videos, uint8 or float in `value_range`.
        reference: the same shape as `generated`.
        value_range: `(low, high)` of float inputs.

    Returns:
        float64 scalar tensor. Higher is better.

    Example:
        >>> g = torch.rand(2, 8, 3, 64, 64); psnr(g, g.clamp(0.1, 0.9)).shape
        torch.Size([])
    """
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    return frame_mean(_psnr_update(gen, ref), name="psnr")


def psnr_per_frame(generated: Tensor, reference: Tensor, *, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """PSNR in dB at each timestep, averaged over clips: a float64 `(T,)` curve over the generated horizon.

    Arguments as in `psnr`.
    """
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    return frame_curve(_psnr_update(gen, ref), name="psnr_per_frame")


class PSNR(FramewiseMetric):
    """Streaming PSNR: `update(generated, reference)` per batch, `compute()` the mean over every frame seen,
    `compute_curve()` the `(T,)` per-timestep mean, `reset()` to start over. Same math as `psnr`.

    Example:
        >>> metric = PSNR(value_range=(-1.0, 1.0))
        >>> for gen, ref in batches:  # doctest: +SKIP
        ...     metric.update(gen, ref)
        >>> metric.compute()  # doctest: +SKIP
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    _score_fn = staticmethod(_psnr_update)
