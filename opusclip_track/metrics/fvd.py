"""FVD (Unterthiner et al. 2018): Frechet distance between I3D features of 16-frame clips.

The detector is the TorchScript I3D `i3d_torchscript.pt` that StyleGAN-V published (a port of the tf.hub
Kinetics-400 I3D of the original FVD code), from the weights resolver. Preprocessing follows the widely used
PyTorch FVD code (universome/fvd-comparison, common_metrics_on_video_quality): each frame is resized so its
shorter side is 224 (bilinear, `align_corners=False`), center-cropped to 224x224 and mapped to [-1, 1];
clips go in as float `(N, 3, 16, 224, 224)` and the detector is called with
`rescale=False, resize=False, return_features=True`, which returns the 400 pre-softmax logits.

Where this differs from StyleGAN-V's own code (`src/metrics/frechet_video_distance.py` and
`metric_utils.py`), which published the detector:
- Covariance: we use the unbiased covariance (divide by N-1, as numpy.cov, torchmetrics and torch-fidelity);
  StyleGAN-V's `FeatureStats.get_mean_cov` uses the population covariance (`raw_cov / N - mean mean^T`).
  The covariance terms differ by the factor N/(N-1): 0.05% at the usual 2048 clips per set, 7% at 16.
- Quantisation: StyleGAN-V turns generated frames into uint8 with `(x * 127.5 + 128).clamp(0, 255)
  .to(torch.uint8)` (x in [-1, 1]), a truncating cast that, with its +0.5 offset, rounds half up; we feed
  float frames without quantising them. uint8 input goes through both unchanged.
- Resize: StyleGAN-V calls the detector with `rescale=True, resize=True`, so the detector maps [0, 255] to
  [-1, 1] itself and resizes every frame to 224x224 whole (trilinear with time kept, i.e. bilinear per frame,
  `align_corners=False`), stretching non-square frames. We resize the shorter side to 224 and center-crop
  (bilinear, `align_corners=False`), keeping the aspect ratio. For square frames the two resizes are the
  same operation.
- Clips: StyleGAN-V reads 16 consecutive frames per video, at a random offset for real videos; we take the
  first 16 frames, or every 16-frame window with `clips="split"`.
- The Frechet distance itself is the same formula; StyleGAN-V takes `scipy.linalg.sqrtm` of the product,
  we use symmetric eigensolvers (`frechet.py`), equal to 1e-7 relative.

Clips: FVD is defined on 16-frame clips. Videos with fewer frames are an error; longer ones give their first
16 frames (`clips="first"`, default) or every non-overlapping 16-frame window (`clips="split"`, the
remainder dropped). Gaussians fitted to few clips are poor: the usual protocol uses 2048 clips per set.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from opusclip_track._checks import ValueRange
from opusclip_track.metrics._input import prepare_videos
from opusclip_track.metrics.frechet import VideoFrechetDistance, frechet_distance_from_features
from opusclip_track.metrics.pretrained import load_torchscript, resolve_device
from opusclip_track.metrics.weights import file_stamp, resolve_weights

ClipMode = Literal["first", "split"]
FVD_FRAMES = 16
FVD_RESOLUTION = 224
I3D_FEATURES = 400
DEFAULT_CLIP_BATCH = 4


def load_i3d(weights_dir: str | Path | None = None, device: str | torch.device | None = None) -> torch.jit.ScriptModule:
    """The TorchScript I3D detector from the resolved `i3d_torchscript.pt`; cached per (file, device).

    A TorchScript archive holds TorchScript code (run by its interpreter, not pickled Python), which is why
    it loads with `torch.jit.load` rather than `torch.load(weights_only=True)`.

    Raises:
        MissingWeightsError: when the file is missing and cannot be downloaded.
        WeightsLoadError: when the file on disk is not a loadable TorchScript archive.
    """
    path = resolve_weights("i3d", weights_dir)
    return _load_i3d_cached(file_stamp(path), str(resolve_device(device)))


@functools.lru_cache(maxsize=2)
def _load_i3d_cached(stamp: tuple[str, int, int], device: str) -> torch.jit.ScriptModule:
    return load_torchscript("i3d", stamp[0], device)


def _clips(videos: Tensor, *, clips: ClipMode, name: str) -> Tensor:
    """`(B, T, C, H, W)` prepared videos -> `(N, 16, C, H, W)` clips, per the `clips` rule."""
    if videos.shape[1] < FVD_FRAMES:
        raise ValueError(f"{name}: expected videos of at least {FVD_FRAMES} frames for FVD, received shape "
                         f"{tuple(videos.shape)} (T={videos.shape[1]})")
    if clips == "first":
        return videos[:, :FVD_FRAMES]
    if clips == "split":
        usable = videos.shape[1] // FVD_FRAMES * FVD_FRAMES
        return videos[:, :usable].reshape(-1, FVD_FRAMES, *videos.shape[2:])
    raise ValueError(f"clips: expected 'first' or 'split', received {clips!r}")


def _i3d_input(clips: Tensor, resolution: int) -> Tensor:
    """`(N, 16, C, H, W)` in [0, 1] -> `(N, 3, 16, R, R)` in [-1, 1]: shorter side to R, center crop."""
    n, t, c, h, w = clips.shape
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), resolution)
    x = F.interpolate(clips.reshape(n * t, c, h, w).float(), size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[:, :, top:top + resolution, left:left + resolution]
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.reshape(n, t, 3, resolution, resolution).permute(0, 2, 1, 3, 4)  # (N, 3, T, R, R)
    return (x * 2.0 - 1.0).contiguous()


def _i3d_features(detector: torch.jit.ScriptModule, videos: Tensor, *, clips: ClipMode, resolution: int,
                  clip_batch: int, name: str) -> Tensor:
    """I3D features `(N, 400)` of the 16-frame clips of prepared `(B, T, C, H, W)` videos."""
    device = next(detector.parameters()).device
    all_clips = _clips(videos, clips=clips, name=name)
    feats = []
    with torch.inference_mode():
        for start in range(0, all_clips.shape[0], clip_batch):
            x = _i3d_input(all_clips[start:start + clip_batch].to(device), resolution)
            feats.append(detector(x, rescale=False, resize=False, return_features=True))
    out = torch.cat(feats)
    if out.ndim != 2 or out.shape[1] != I3D_FEATURES:
        raise ValueError(f"i3d detector: expected features of shape (N, {I3D_FEATURES}), received "
                         f"{tuple(out.shape)}; is the weights file the FVD I3D TorchScript?")
    return out


def fvd(generated: Tensor, reference: Tensor, *, clips: ClipMode = "first", value_range: ValueRange = (0.0, 1.0),
        weights_dir: str | Path | None = None, device: str | torch.device | None = None,
        resolution: int = FVD_RESOLUTION, clip_batch: int = DEFAULT_CLIP_BATCH) -> Tensor:
    """Frechet Video Distance between generated and reference videos.

    Args:
        generated: `(B, T, C, H, W)` or `(T, C, H, W)` videos with T >= 16, uint8 or float in `value_range`;
            at least 2 clips in all.
        reference: videos of the same kind (the sets may differ in size).
        clips: `"first"` (the first 16 frames of each video) or `"split"` (every non-overlapping 16-frame
            window).
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for `i3d_torchscript.pt` (see `weights.py`).
        device: where the network runs; CUDA when available, else CPU, by default.
        resolution: frame size fed to I3D. 224 is the standard; other values give numbers not comparable
            with published FVDs.
        clip_batch: clips per network call.

    Returns:
        float64 scalar tensor. Lower is better; 0 for identical sets.

    Example:
        >>> fvd(generated, reference, weights_dir="/data/weights")  # doctest: +SKIP
    """
    detector = load_i3d(weights_dir, device)
    feats = []
    for videos, name in ((generated, "generated"), (reference, "reference")):
        prepared = prepare_videos(videos, name=name, value_range=value_range)
        feats.append(_i3d_features(detector, prepared, clips=clips, resolution=resolution, clip_batch=clip_batch,
                                   name=name))
    return frechet_distance_from_features(feats[0], feats[1])


class FVD(VideoFrechetDistance):
    """Streaming FVD: `update(generated=..., reference=...)` per batch (either or both), `compute()`, `reset()`.

    Same clips, features and math as `fvd`. With `reset_real_features=False` the reference statistics
    survive `reset()`.

    Args:
        clips: `"first"` or `"split"` (see `fvd`).
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for `i3d_torchscript.pt`.
        device: where the network runs and the states start (CUDA when available by default); `.to()`
            moves the states afterwards, as for any torchmetrics metric.
        resolution: frame size fed to I3D (224 is the standard).
        clip_batch: clips per network call.
        reset_real_features: whether `reset()` clears the reference statistics too.
        **kwargs: passed to `torchmetrics.Metric`.
    """

    def __init__(self, *, clips: ClipMode = "first", value_range: ValueRange = (0.0, 1.0),
                 weights_dir: str | Path | None = None, device: str | torch.device | None = None,
                 resolution: int = FVD_RESOLUTION, clip_batch: int = DEFAULT_CLIP_BATCH,
                 reset_real_features: bool = True, **kwargs: object) -> None:
        if clips not in ("first", "split"):
            raise ValueError(f"clips: expected 'first' or 'split', received {clips!r}")
        super().__init__(I3D_FEATURES, value_range=value_range, reset_real_features=reset_real_features, **kwargs)
        self.clips: ClipMode = clips
        self.resolution = resolution
        self.clip_batch = clip_batch
        # A plain attribute, not a submodule: the cached detector is shared and `.to()` must not move it.
        self._model = [load_i3d(weights_dir, device)]
        self.to(resolve_device(device))  # the states start beside the network: no host copy per update

    def protocol(self) -> dict[str, object]:
        """How the number is computed, for the run config (see `VideoMetrics.protocol`)."""
        return {"weights": "i3d", "frames": FVD_FRAMES, "clips": self.clips, "resolution": self.resolution,
                "input": "shorter side resized (bilinear) and center-cropped, [-1, 1], rescale=False, resize=False",
                "features": "I3D logits (400)", "covariance": "unbiased (N-1)"}

    def _embed(self, videos: Tensor, *, name: str) -> Tensor:
        return _i3d_features(self._model[0], videos, clips=self.clips, resolution=self.resolution,
                             clip_batch=self.clip_batch, name=name)
