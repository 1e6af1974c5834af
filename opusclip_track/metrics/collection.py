"""`VideoMetrics`: a chosen set of video-quality metrics computed in one pass over generated/reference pairs.

Inputs are checked and mapped to float [0, 1] once per `update`, then handed to every metric. PSNR, SSIM and
flicker need nothing else; LPIPS, FID, IS and FVD need pretrained weights and are imported only when asked
for. A missing weights file raises `MissingWeightsError` (never a silent skip, never random weights);
`available_metrics()` says beforehand which metrics can run here and why the others cannot.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor
from torchmetrics import Metric

from opusclip_track._checks import ValueRange, check_value_range
from opusclip_track.metrics._framewise import FramewiseMetric
from opusclip_track.metrics._input import prepare_pair
from opusclip_track.metrics.names import (
    DEFAULT_METRICS,
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    WEIGHTS_KEY,
    MetricName,
    check_metric_names,
)
from opusclip_track.metrics.psnr import MSE_FLOOR, PSNR
from opusclip_track.metrics.ssim import SSIM, ssim_protocol
from opusclip_track.metrics.temporal import TemporalFlicker
from opusclip_track.metrics.weights import find_weights, get_weights_file, missing_message

__all__ = [
    "DEFAULT_METRICS", "METRIC_NAMES", "PREFIX", "MetricName", "VideoMetrics", "available_metrics",
    "check_metric_names", "higher_is_better",
]

PREFIX = "video/"

_BUILTIN: dict[str, type[Metric]] = {"psnr": PSNR, "ssim": SSIM, "flicker": TemporalFlicker}
# Learned metrics: (module, class) imported on first use; the weights file each loads is in names.WEIGHTS_KEY.
_LEARNED: dict[str, tuple[str, str]] = {
    "lpips": ("opusclip_track.metrics.lpips", "LPIPS"),
    "fid": ("opusclip_track.metrics.fid", "FID"),
    "is": ("opusclip_track.metrics.fid", "InceptionScore"),
    "fvd": ("opusclip_track.metrics.fvd", "FVD"),
}
_FLICKER_DEFINITION = "mean |(gen[t+1]-gen[t]) - (ref[t+1]-ref[t])| on [0, 1] frames"
_TEMPORAL_DIFF_DEFINITION = "mean |gen[t+1]-gen[t]| - mean |ref[t+1]-ref[t]| on [0, 1] frames"


def _learned_class(metric: str) -> type[Metric]:
    module_name, class_name = _LEARNED[metric]
    return getattr(importlib.import_module(module_name), class_name)


def higher_is_better(key: str) -> bool | None:
    """Whether a larger value of a `compute()` key (`"video/psnr"` or `"psnr"`) is better (`names.HIGHER_IS_BETTER`).

    None when neither is: `temporal_diff` (0 is best) and `is_std` (a spread), and for a key no metric returns.
    """
    return HIGHER_IS_BETTER.get(key.removeprefix(PREFIX))


def available_metrics(weights_dir: str | Path | None = None) -> dict[str, str | None]:
    """Which metrics can run here: `{name: None}` when it can, `{name: reason}` when it cannot.

    Only looks on disk (no download): a learned metric whose weights file is not in `weights_dir`, in
    `$OPUSCLIP_WEIGHTS_DIR` or in the torch hub cache gets the `MissingWeightsError` message, which names the
    file and how to provide it. A training recipe uses this to log which metrics it skipped and why.

    Example:
        >>> skipped = {k: v for k, v in available_metrics().items() if v}  # doctest: +SKIP
    """
    status: dict[str, str | None] = dict.fromkeys(_BUILTIN)
    for metric in _LEARNED:
        try:
            _learned_class(metric)
        except ImportError as err:
            status[metric] = f"{metric}: its module could not be imported ({err})"
            continue
        spec = get_weights_file(WEIGHTS_KEY[metric])
        found = find_weights(spec, weights_dir) is not None
        status[metric] = None if found else missing_message(spec, weights_dir, reason="no download was attempted")
    return {name: status[name] for name in METRIC_NAMES}


class VideoMetrics:
    """Several video metrics over the same generated/reference pairs, with inputs prepared once.

    Args:
        metrics: names out of `psnr`, `ssim`, `lpips`, `fid`, `is`, `fvd`, `flicker`.
        value_range: `(low, high)` of float inputs (uint8 inputs are always 0-255).
        weights_dir: a directory searched first for pretrained weights (LPIPS, FID, IS, FVD).
        device: where to compute; None computes where the first batch lives.

    Raises:
        MissingWeightsError: when a learned metric's weights file cannot be found or downloaded.

    Example:
        >>> vm = VideoMetrics(metrics=("psnr", "ssim", "flicker"), value_range=(-1.0, 1.0))
        >>> vm.update(torch.rand(2, 8, 3, 32, 32) * 2 - 1, torch.rand(2, 8, 3, 32, 32) * 2 - 1)
        >>> sorted(vm.compute())
        ['video/flicker', 'video/psnr', 'video/ssim', 'video/temporal_diff']
    """

    def __init__(
        self,
        metrics: Iterable[MetricName] = DEFAULT_METRICS,
        *,
        value_range: ValueRange = (0.0, 1.0),
        weights_dir: str | Path | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.names = check_metric_names(metrics)
        self.value_range = check_value_range(value_range)
        self.weights_dir = weights_dir
        self.device = torch.device(device) if device is not None else None
        self._metrics: dict[str, Metric] = {name: self._build(name) for name in self.names}
        if self.device is not None:
            self._move_states(self.device)
        self._clip_shape: tuple[int, ...] | None = None  # (T, C, H, W) of the first batch since reset
        self.num_videos = 0

    def _move_states(self, device: torch.device) -> None:
        for metric in self._metrics.values():
            metric.to(device)  # a no-op once the states live there

    def _build(self, name: str) -> Metric:
        if name in _BUILTIN:
            return _BUILTIN[name]()  # fed prepared [0, 1] videos, so their own value_range stays (0, 1)
        return _learned_class(name)(weights_dir=self.weights_dir, device=self.device)

    def update(self, generated: Tensor, reference: Tensor) -> None:
        """Add a batch of pairs: `(B, T, C, H, W)` or `(T, C, H, W)`, uint8 or float in `value_range`.

        Every batch since the last `reset` must have the same `(T, C, H, W)`, so the protocol holds for all.
        """
        if self.device is not None:
            generated, reference = generated.to(self.device), reference.to(self.device)
        gen, ref = prepare_pair(generated, reference, value_range=self.value_range)
        self._check_clip_shape(gen)
        if self.device is None:
            self._move_states(gen.device)
        for name, metric in self._metrics.items():
            if name == "is":  # the Inception Score needs no reference
                metric.update(gen, prepared=True)
            else:
                metric.update(gen, ref, prepared=True)
        self.num_videos += gen.shape[0]

    def _check_clip_shape(self, gen: Tensor) -> None:
        shape = tuple(gen.shape[1:])
        if self._clip_shape is None:
            self._clip_shape = shape
        elif shape != self._clip_shape:
            raise ValueError(f"generated: expected clips of (T, C, H, W) = {self._clip_shape} as in earlier "
                             f"updates (call reset() to change), received {shape}")

    def compute(self) -> dict[str, float]:
        """Every chosen metric over all pairs seen since `reset`, as `{"video/<name>": value}`.

        `flicker` also adds `video/temporal_diff`; `is` adds `video/is_std` when the metric provides it.
        """
        if self.num_videos == 0:
            raise RuntimeError("VideoMetrics.compute: no videos seen yet; call update(generated, reference) first")
        out: dict[str, float] = {}
        for name, metric in self._metrics.items():
            out.update(_results(name, metric))
        return out

    def compute_curves(self) -> dict[str, Tensor]:
        """Per-timestep `(T,)` curves (mean over clips) of the per-frame metrics chosen: PSNR, SSIM, LPIPS."""
        return {f"{PREFIX}{name}": metric.compute_curve() for name, metric in self._metrics.items()
                if isinstance(metric, FramewiseMetric)}

    def compute_frame_scores(self) -> dict[str, Tensor]:
        """Every frame's score of the per-frame metrics chosen (PSNR, SSIM, LPIPS): `(N, T)` float64 each, one
        row per clip in the order the clips were passed to `update`."""
        return {f"{PREFIX}{name}": metric.compute_frame_scores() for name, metric in self._metrics.items()
                if isinstance(metric, FramewiseMetric)}

    def compute_per_clip(self) -> dict[str, Tensor]:
        """Each clip's score, `(N,)` float64, in the order the clips were passed to `update`.

        For the metrics defined per clip: PSNR, SSIM and LPIPS (the mean over the clip's frames), flicker and
        temporal_diff. FID, IS and FVD compare whole sets and have no per-clip value.
        """
        out = {key: scores.mean(dim=1) for key, scores in self.compute_frame_scores().items()}
        if "flicker" in self._metrics:
            flicker, temporal_diff = cast(TemporalFlicker, self._metrics["flicker"]).compute_per_clip()
            out.update({f"{PREFIX}flicker": flicker, f"{PREFIX}temporal_diff": temporal_diff})
        return out

    def reset(self) -> None:
        """Forget every pair seen (learned metrics may keep cached reference statistics by their own rules)."""
        for metric in self._metrics.values():
            metric.reset()
        self._clip_shape = None
        self.num_videos = 0

    def protocol(self) -> dict[str, Any]:
        """How the numbers are computed, to store in the run config so runs can be compared.

        Holds the metrics, the input value range, the clip shape `(frames, channels, resolution)` of the data
        seen (None before the first `update`), the number of videos seen, and per metric its settings (SSIM
        window, PSNR peak, flicker definition, and for learned metrics what their `protocol()` reports:
        weights file names, resize and normalisation).
        """
        frames, channels, height, width = self._clip_shape or (None, None, None, None)
        return {
            "metrics": list(self.names),
            "value_range": list(self.value_range),
            "frames": frames,
            "channels": channels,
            "resolution": None if height is None else [height, width],
            "num_videos": self.num_videos,
            "reduction": "per frame, then mean over frames and clips (psnr, ssim, lpips)",
            "settings": {name: _metric_protocol(name, metric) for name, metric in self._metrics.items()},
        }


def _results(name: str, metric: Metric) -> dict[str, float]:
    key = f"{PREFIX}{name}"
    if name == "flicker":
        diff = cast(TemporalFlicker, metric).compute_temporal_diff()
        return {key: float(metric.compute()), f"{PREFIX}temporal_diff": float(diff)}
    value = metric.compute()
    if isinstance(value, tuple):  # (mean, std), as torchmetrics' InceptionScore returns
        return {key: float(value[0]), f"{key}_std": float(value[1])}
    return {key: float(value)}


def _metric_protocol(name: str, metric: Metric) -> Mapping[str, Any]:
    if name == "psnr":
        return {"peak": 1.0, "mse_floor": MSE_FLOOR, "per": "frame (channels and pixels)"}
    if name == "ssim":
        return ssim_protocol()
    if name == "flicker":
        return {"flicker": _FLICKER_DEFINITION, "temporal_diff": _TEMPORAL_DIFF_DEFINITION}
    describe = getattr(metric, "protocol", None)
    return dict(describe()) if callable(describe) else {"class": type(metric).__name__,
                                                        "weights": WEIGHTS_KEY[name]}
