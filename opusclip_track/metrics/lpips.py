"""LPIPS (Zhang et al. 2018) of generated against reference videos, per frame, through the `lpips` package.

The `lpips` package ships its calibrated linear heads; the ImageNet backbone (torchvision AlexNet, or VGG16)
comes from the weights resolver (`weights.py`): the network is built with `pnet_rand=True` (so the package
downloads nothing) and the resolved torchvision state dict is then loaded into its backbone, strictly. A
missing backbone file raises `MissingWeightsError`; random backbone weights are never used.

Frames are mapped from [0, 1] to [-1, 1] (what LPIPS expects) and scored one by one; a video's score is the
mean over its frames. Lower is better; 0 for identical frames.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from opusclip_track._checks import ValueRange
from opusclip_track.metrics._framewise import FramewiseMetric, frame_curve, frame_mean
from opusclip_track.metrics._input import frames, prepare_pair
from opusclip_track.metrics.pretrained import load_state_dict, resolve_device
from opusclip_track.metrics.weights import file_stamp, resolve_weights

LpipsNet = Literal["alex", "vgg"]
_BACKBONE_WEIGHTS: dict[str, str] = {"alex": "alexnet", "vgg": "vgg16"}
DEFAULT_FRAME_BATCH = 64


def load_lpips(net: LpipsNet = "alex", weights_dir: str | Path | None = None,
               device: str | torch.device | None = None) -> nn.Module:
    """The `lpips.LPIPS` network with its backbone loaded from the resolved torchvision weights file.

    Cached per (net, file, device): repeated functional calls reuse the network. Frozen and in eval mode.

    Raises:
        ValueError: for an unknown `net`.
        MissingWeightsError: when the backbone file is missing and cannot be downloaded.
        WeightsLoadError: when the file on disk does not load (corrupt, truncated or a different file).
    """
    if net not in _BACKBONE_WEIGHTS:
        raise ValueError(f"net: expected one of {sorted(_BACKBONE_WEIGHTS)}, received {net!r}")
    path = resolve_weights(_BACKBONE_WEIGHTS[net], weights_dir)
    return _load_lpips_cached(net, file_stamp(path), str(resolve_device(device)))


@functools.lru_cache(maxsize=4)
def _load_lpips_cached(net: str, stamp: tuple[str, int, int], device: str) -> nn.Module:
    path = stamp[0]
    import lpips as lpips_package  # lazily: this module's public function has the same name

    state = load_state_dict(_BACKBONE_WEIGHTS[net], path)  # a bad file fails before the network is built
    with warnings.catch_warnings():  # torchvision deprecates the `pretrained=` lpips passes it
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_package.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    model.net.load_state_dict(_backbone_state(state, model.net, path=path), strict=True)
    return model.to(device).eval().requires_grad_(False)


def _backbone_state(torchvision_state: dict[str, Tensor], backbone: nn.Module, *, path: str) -> dict[str, Tensor]:
    """Rename torchvision `features.<i>.<param>` keys to lpips' `slice<k>.<i>.<param>`.

    lpips' backbone copies `torchvision_model.features[i]` into `slice<k>` under its original index `i`, so
    each lpips key names the torchvision key it comes from; the classifier is not used.
    """
    mapped: dict[str, Tensor] = {}
    for key in backbone.state_dict():
        _slice, index, param = key.split(".", 2)
        source = f"features.{index}.{param}"
        if source not in torchvision_state:
            raise ValueError(f"{path}: expected a torchvision state dict with key {source!r} (for lpips' {key!r}), "
                             f"received keys {sorted(torchvision_state)[:6]}...")
        mapped[key] = torchvision_state[source]
    return mapped


def _lpips_frames(model: nn.Module, gen: Tensor, ref: Tensor, *, frame_batch: int) -> Tensor:
    """LPIPS per frame of prepared `(B, T, C, H, W)` videos in [0, 1]: `(B, T)` float64 on `gen`'s device."""
    device = next(model.parameters()).device
    gen_frames, ref_frames = frames(gen), frames(ref)
    if gen_frames.shape[1] == 1:  # grayscale: the backbone wants RGB
        gen_frames, ref_frames = gen_frames.expand(-1, 3, -1, -1), ref_frames.expand(-1, 3, -1, -1)
    scores = []
    with torch.inference_mode():
        for start in range(0, gen_frames.shape[0], frame_batch):
            a = gen_frames[start:start + frame_batch].to(device, torch.float32) * 2.0 - 1.0
            b = ref_frames[start:start + frame_batch].to(device, torch.float32) * 2.0 - 1.0
            scores.append(model(a, b).flatten())
    return torch.cat(scores).to(gen.device, torch.float64).view(gen.shape[0], gen.shape[1])


def lpips(generated: Tensor, reference: Tensor, *, net: LpipsNet = "alex", value_range: ValueRange = (0.0, 1.0),
          weights_dir: str | Path | None = None, device: str | torch.device | None = None,
          frame_batch: int = DEFAULT_FRAME_BATCH) -> Tensor:
    """LPIPS averaged over all frames of all clips.

    Args:
        generated: `(B, T, C, H, W)` or `(T, C, H, W)` videos, uint8 or float in `value_range`; frames of at
            least 32x32 pixels.
        reference: the same shape as `generated`.
        net: backbone, `"alex"` (the LPIPS default) or `"vgg"`.
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for the backbone weights (see `weights.py`).
        device: where the network runs; CUDA when available, else CPU, by default.
        frame_batch: frames per network call (memory bound).

    Returns:
        float64 scalar tensor on `generated`'s device. Lower is better.

    Example:
        >>> lpips(generated, reference, weights_dir="/data/weights")  # doctest: +SKIP
    """
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    model = load_lpips(net, weights_dir, device)
    return frame_mean(_lpips_frames(model, gen, ref, frame_batch=frame_batch), name="lpips")


def lpips_per_frame(generated: Tensor, reference: Tensor, *, net: LpipsNet = "alex",
                    value_range: ValueRange = (0.0, 1.0), weights_dir: str | Path | None = None,
                    device: str | torch.device | None = None, frame_batch: int = DEFAULT_FRAME_BATCH) -> Tensor:
    """LPIPS at each timestep averaged over clips: a float64 `(T,)` curve. Arguments as in `lpips`."""
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    model = load_lpips(net, weights_dir, device)
    return frame_curve(_lpips_frames(model, gen, ref, frame_batch=frame_batch), name="lpips_per_frame")


class LPIPS(FramewiseMetric):
    """Streaming LPIPS: `update(generated, reference)` per batch, `compute()` the mean over every frame seen,
    `compute_curve()` the per-timestep mean, `reset()`. Same math as `lpips`.

    The network is loaded when the metric is built, so a missing weights file fails here, not mid-run.

    Args:
        net: backbone, `"alex"` or `"vgg"`.
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for the backbone weights.
        device: where the network runs (CUDA when available by default); states stay where the metric is.
        frame_batch: frames per network call.
        **kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> metric = LPIPS(weights_dir="/data/weights")  # doctest: +SKIP
        >>> metric.update(generated, reference); metric.compute()  # doctest: +SKIP
    """

    higher_is_better = False
    plot_lower_bound = 0.0

    def __init__(self, *, net: LpipsNet = "alex", value_range: ValueRange = (0.0, 1.0),
                 weights_dir: str | Path | None = None, device: str | torch.device | None = None,
                 frame_batch: int = DEFAULT_FRAME_BATCH, **kwargs: object) -> None:
        super().__init__(value_range=value_range, **kwargs)
        self.net_name = net
        self.frame_batch = frame_batch
        # A plain attribute, not a submodule: the cached network is shared and `.to()` must not move it.
        self._model = [load_lpips(net, weights_dir, device)]

    def protocol(self) -> dict[str, object]:
        """How the number is computed, for the run config (see `VideoMetrics.protocol`)."""
        return {"net": self.net_name, "weights": _BACKBONE_WEIGHTS[self.net_name], "lpips_version": "0.1",
                "input": "frames mapped from [0, 1] to [-1, 1], native resolution", "per": "frame"}

    def _update_prepared(self, gen: Tensor, ref: Tensor) -> None:
        scores = _lpips_frames(self._model[0], gen, ref, frame_batch=self.frame_batch)
        self.scores.append(scores.to(self.device))  # type: ignore[union-attr,operator]
