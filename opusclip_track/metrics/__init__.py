"""Video-quality metrics for generated videos: a functional twin and a streaming class for each.

Every metric takes `(B, T, C, H, W)` videos or one `(T, C, H, W)` clip, uint8 or float in a `value_range`
such as `(0.0, 1.0)` or `(-1.0, 1.0)`. `VideoMetrics` computes a chosen set in one pass and reports flat
`video/<name>` keys. LPIPS, FID, IS and FVD need pretrained weights (see `weights`); without them they raise
`MissingWeightsError` naming the file, and `available_metrics()` says what can run here.

Example:
    >>> from opusclip_track.metrics import VideoMetrics
    >>> vm = VideoMetrics(metrics=("psnr", "ssim", "flicker"))
    >>> vm.update(generated, reference)  # doctest: +SKIP
    >>> vm.compute()  # {"video/psnr": ..., "video/ssim": ..., "video/flicker": ..., ...}  # doctest: +SKIP
"""

from opusclip_track.metrics._input import check_pair, prepare_pair, prepare_videos
from opusclip_track.metrics.collection import (
    DEFAULT_METRICS,
    METRIC_NAMES,
    MetricName,
    VideoMetrics,
    available_metrics,
    higher_is_better,
)
from opusclip_track.metrics.fid import FID, InceptionScore, fid, inception_score, load_inception
from opusclip_track.metrics.frechet import (
    FrechetDistance,
    VideoFrechetDistance,
    frechet_distance,
    frechet_distance_from_features,
)
from opusclip_track.metrics.fvd import FVD, fvd, load_i3d
from opusclip_track.metrics.lpips import LPIPS, load_lpips, lpips, lpips_per_frame
from opusclip_track.metrics.psnr import PSNR, psnr, psnr_per_frame
from opusclip_track.metrics.ssim import SSIM, ssim, ssim_per_frame, ssim_protocol
from opusclip_track.metrics.temporal import TemporalFlicker, flicker, temporal_diff
from opusclip_track.metrics.weights import (
    REGISTRY,
    MissingWeightsError,
    WeightsChecksumError,
    WeightsFile,
    download_weights,
    find_weights,
    resolve_weights,
    verify_weights,
)

__all__ = [
    # inputs
    "check_pair", "prepare_pair", "prepare_videos",
    # per-frame and temporal metrics
    "PSNR", "psnr", "psnr_per_frame",
    "SSIM", "ssim", "ssim_per_frame", "ssim_protocol",
    "TemporalFlicker", "flicker", "temporal_diff",
    # learned metrics
    "LPIPS", "lpips", "lpips_per_frame", "load_lpips",
    "FID", "fid", "InceptionScore", "inception_score", "load_inception",
    "FVD", "fvd", "load_i3d",
    "FrechetDistance", "VideoFrechetDistance", "frechet_distance", "frechet_distance_from_features",
    # weights
    "REGISTRY", "MissingWeightsError", "WeightsChecksumError", "WeightsFile",
    "download_weights", "find_weights", "resolve_weights", "verify_weights",
    # collection
    "DEFAULT_METRICS", "METRIC_NAMES", "MetricName", "VideoMetrics", "available_metrics", "higher_is_better",
]
