"""Video-quality metrics for generated videos: a functional twin and a streaming class for each.

Every metric takes `(B, T, C, H, W)` videos or one `(T, C, H, W)` clip, uint8 or float in a `value_range`
such as `(0.0, 1.0)` or `(-1.0, 1.0)`. `VideoMetrics` computes a chosen set in one pass and reports flat
`video/<name>` keys. LPIPS, FID, IS and FVD need pretrained weights (see `weights`); without them they raise
`MissingWeightsError` naming the file, and `available_metrics()` says what can run here.

The names below are imported on first use (PEP 562), so `import opusclip_track.metrics.weights` or
`.names` (what the command line needs) does not load torch and torchmetrics (~3 s).

Example:
    >>> from opusclip_track.metrics import VideoMetrics
    >>> vm = VideoMetrics(metrics=("psnr", "ssim", "flicker"))
    >>> vm.update(generated, reference)  # doctest: +SKIP
    >>> vm.compute()  # {"video/psnr": ..., "video/ssim": ..., "video/flicker": ..., ...}  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opusclip_track.metrics._input import check_pair, prepare_pair, prepare_videos
    from opusclip_track.metrics.collection import VideoMetrics, available_metrics, higher_is_better
    from opusclip_track.metrics.fid import FID, InceptionScore, fid, inception_score, load_inception
    from opusclip_track.metrics.frechet import (
        FrechetDistance,
        VideoFrechetDistance,
        frechet_distance,
        frechet_distance_from_features,
    )
    from opusclip_track.metrics.fvd import FVD, fvd, load_i3d
    from opusclip_track.metrics.lpips import LPIPS, load_lpips, lpips, lpips_per_frame
    from opusclip_track.metrics.names import DEFAULT_METRICS, METRIC_NAMES, MetricName
    from opusclip_track.metrics.psnr import PSNR, psnr, psnr_per_frame
    from opusclip_track.metrics.ssim import SSIM, ssim, ssim_per_frame, ssim_protocol
    from opusclip_track.metrics.temporal import TemporalFlicker, flicker, temporal_diff
    from opusclip_track.metrics.weights import (
        REGISTRY,
        MissingWeightsError,
        WeightsChecksumError,
        WeightsFile,
        WeightsLoadError,
        download_weights,
        find_weights,
        resolve_weights,
        verify_weights,
    )

# Public name -> the module (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("check_pair", "prepare_pair", "prepare_videos"), "._input"),
    **dict.fromkeys(("PSNR", "psnr", "psnr_per_frame"), ".psnr"),
    **dict.fromkeys(("SSIM", "ssim", "ssim_per_frame", "ssim_protocol"), ".ssim"),
    **dict.fromkeys(("TemporalFlicker", "flicker", "temporal_diff"), ".temporal"),
    **dict.fromkeys(("LPIPS", "lpips", "lpips_per_frame", "load_lpips"), ".lpips"),
    **dict.fromkeys(("FID", "fid", "InceptionScore", "inception_score", "load_inception"), ".fid"),
    **dict.fromkeys(("FVD", "fvd", "load_i3d"), ".fvd"),
    **dict.fromkeys(("FrechetDistance", "VideoFrechetDistance", "frechet_distance", "frechet_distance_from_features"),
                    ".frechet"),
    **dict.fromkeys(("REGISTRY", "MissingWeightsError", "WeightsChecksumError", "WeightsFile", "WeightsLoadError",
                     "download_weights", "find_weights", "resolve_weights", "verify_weights"), ".weights"),
    **dict.fromkeys(("DEFAULT_METRICS", "METRIC_NAMES", "MetricName"), ".names"),
    **dict.fromkeys(("VideoMetrics", "available_metrics", "higher_is_better"), ".collection"),
}

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
    "REGISTRY", "MissingWeightsError", "WeightsChecksumError", "WeightsFile", "WeightsLoadError",
    "download_weights", "find_weights", "resolve_weights", "verify_weights",
    # collection
    "DEFAULT_METRICS", "METRIC_NAMES", "MetricName", "VideoMetrics", "available_metrics", "higher_is_better",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


class _Package(types.ModuleType):
    """This package's module type: the functions `psnr`, `ssim`, `lpips`, `fid`, `fvd` win over their modules.

    Importing the submodule `metrics.ssim` (as `collection` does) makes Python bind it on this package under
    the name `ssim`, which would hide the function `ssim` from `from opusclip_track.metrics import ssim`; the
    eager imports this package used to run rebound the name to the function. Binding the function instead
    keeps that behaviour while the imports stay lazy.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
