"""FID and Inception Score of video frames, with the standard FID Inception-v3 (torch-fidelity's port).

The frames of every clip form the image set. Each frame is mapped from [0, 1] to uint8 (`round(x * 255)`:
FID was defined on 8-bit images, and the network's first step assumes 0-255 values), then torch-fidelity's
`FeatureExtractorInceptionV3` resizes it to 299x299 with its TensorFlow-1.x-compatible bilinear resize
(as the original TF FID code does) and scales it to [-1, 1]. FID uses the 2048-d pool features (or the
64/192/768-d earlier ones), IS the 1008 "unbiased" logits (before the bias), as torch-fidelity does.

Comparability on the same frames:
- torch-fidelity: the same FID and IS (same network, resize, quantisation, unbiased covariance, IS shuffle).
- torchmetrics' `FrechetInceptionDistance`: the same FID only when it gets uint8 frames (`normalize=False`,
  its default) and is built with `antialias=False`. Its default `antialias=True` resizes with torch's
  antialiased bilinear instead of the TF1-compatible resize (12% apart on 448 px test frames), and float
  input (`normalize=True`) is quantised with `(x * 255).byte()`, which truncates where we round (1.1% apart).
  Tested in `tests/test_metrics_learned.py`.
- torchmetrics' `InceptionScore` is not comparable: it always resizes with antialiasing, splits after an
  unseeded `randperm` (a different number on every call) and reports the unbiased std over splits.

The weights file (`weights-inception-2015-12-05-6726825d.pth`) comes from the weights resolver.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from opusclip_track._checks import ValueRange, check_value_range
from opusclip_track.metrics._input import frames, prepare_videos
from opusclip_track.metrics.frechet import VideoFrechetDistance, frechet_distance_from_features
from opusclip_track.metrics.pretrained import load_state_dict, resolve_device
from opusclip_track.metrics.weights import file_stamp, resolve_weights

InceptionFeature = Literal[64, 192, 768, 2048]
_FEATURE_LAYERS = ("64", "192", "768", "2048", "logits_unbiased")
DEFAULT_FRAME_BATCH = 32
IS_SPLITS = 10
# torch-fidelity shuffles the logits with this seed before splitting; the same seed gives the same IS.
IS_SHUFFLE_SEED = 2020
_INCEPTION_PROTOCOL = {
    "network": "torch-fidelity FeatureExtractorInceptionV3 (TF 2015-12-05 graph)",
    "input": "every frame, round(x * 255) to uint8, TF1-compatible bilinear resize to 299x299, scaled to [-1, 1]",
}


def load_inception(weights_dir: str | Path | None = None, device: str | torch.device | None = None) -> nn.Module:
    """torch-fidelity's FID Inception-v3 with the resolved weights; cached per (file, device), frozen, eval.

    Raises:
        MissingWeightsError: when the weights file is missing and cannot be downloaded.
        WeightsLoadError: when the file on disk does not load (corrupt, truncated or a different file).
    """
    path = resolve_weights("inception", weights_dir)
    return _load_inception_cached(file_stamp(path), str(resolve_device(device)))


@functools.lru_cache(maxsize=2)
def _load_inception_cached(stamp: tuple[str, int, int], device: str) -> nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = load_state_dict("inception", stamp[0])
    # torch-fidelity reads its weights with torch.load(weights_only=False), which would run any pickled code
    # in the file; handing it a re-serialised copy of the state dict loaded safely above keeps that out.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    model = FeatureExtractorInceptionV3("inception-v3-compat", list(_FEATURE_LAYERS),
                                        feature_extractor_weights_path=buffer)
    return model.to(device).eval().requires_grad_(False)


def _inception_features(model: nn.Module, videos: Tensor, *, frame_batch: int) -> dict[str, Tensor]:
    """Features of every frame of prepared `(B, T, C, H, W)` videos: layer name -> `(B*T, D)` float32."""
    device = next(model.parameters()).device
    images = frames(videos)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    outputs: list[tuple[Tensor, ...]] = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], frame_batch):
            chunk = images[start:start + frame_batch].to(device)
            outputs.append(model((chunk * 255.0).round().to(torch.uint8)))
    return {name: torch.cat([out[i] for out in outputs]) for i, name in enumerate(_FEATURE_LAYERS)}


def _check_feature(feature: int) -> str:
    if str(feature) not in _FEATURE_LAYERS[:4] or not isinstance(feature, int):
        raise ValueError(f"feature: expected one of 64, 192, 768, 2048, received {feature!r}")
    return str(feature)


def fid(generated: Tensor, reference: Tensor, *, feature: InceptionFeature = 2048,
        value_range: ValueRange = (0.0, 1.0), weights_dir: str | Path | None = None,
        device: str | torch.device | None = None, frame_batch: int = DEFAULT_FRAME_BATCH) -> Tensor:
    """Frechet Inception Distance between the frames of generated and of reference videos.

    Args:
        generated: `(B, T, C, H, W)` or `(T, C, H, W)` videos, uint8 or float in `value_range`. The two sets
            may differ in size; each needs at least 2 frames in all (far more for a meaningful FID: the
            usual protocol uses 10k-50k images, and FID is biased upwards on small sets).
        reference: videos of the same kind.
        feature: Inception layer, 2048 (standard) or 64/192/768.
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for the Inception weights (see `weights.py`).
        device: where the network runs; CUDA when available, else CPU, by default.
        frame_batch: frames per network call.

    Returns:
        float64 scalar tensor. Lower is better; 0 for identical sets.

    Example:
        >>> fid(generated, reference, weights_dir="/data/weights")  # doctest: +SKIP
    """
    layer = _check_feature(feature)
    model = load_inception(weights_dir, device)
    gen = prepare_videos(generated, name="generated", value_range=value_range)
    ref = prepare_videos(reference, name="reference", value_range=value_range)
    gen_features = _inception_features(model, gen, frame_batch=frame_batch)[layer]
    ref_features = _inception_features(model, ref, frame_batch=frame_batch)[layer]
    return frechet_distance_from_features(gen_features, ref_features)


class FID(VideoFrechetDistance):
    """Streaming FID: `update(generated=..., reference=...)` per batch (either or both), `compute()`, `reset()`.

    Same features and math as `fid`. With `reset_real_features=False` the reference statistics survive
    `reset()`, so a fixed reference set is embedded once per run.

    Args:
        feature: Inception layer, 2048 (standard) or 64/192/768.
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for the Inception weights.
        device: where the network runs and the states start (CUDA when available by default); `.to()`
            moves the states afterwards, as for any torchmetrics metric.
        frame_batch: frames per network call.
        reset_real_features: whether `reset()` clears the reference statistics too.
        **kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> metric = FID(weights_dir="/data/weights", reset_real_features=False)  # doctest: +SKIP
        >>> metric.update(reference=real_videos); metric.update(generated=samples); metric.compute()
    """

    def __init__(self, *, feature: InceptionFeature = 2048, value_range: ValueRange = (0.0, 1.0),
                 weights_dir: str | Path | None = None, device: str | torch.device | None = None,
                 frame_batch: int = DEFAULT_FRAME_BATCH, reset_real_features: bool = True,
                 **kwargs: object) -> None:
        self.layer = _check_feature(feature)
        super().__init__(feature, value_range=value_range, reset_real_features=reset_real_features, **kwargs)
        self.frame_batch = frame_batch
        # A plain attribute, not a submodule: the cached network is shared and `.to()` must not move it.
        self._model = [load_inception(weights_dir, device)]
        self.to(resolve_device(device))  # the states start beside the network: no host copy per update

    def _embed(self, videos: Tensor, *, name: str) -> Tensor:
        return _inception_features(self._model[0], videos, frame_batch=self.frame_batch)[self.layer]

    def protocol(self) -> dict[str, object]:
        """How the number is computed, for the run config (see `VideoMetrics.protocol`)."""
        return {"weights": "inception", **_INCEPTION_PROTOCOL, "feature": int(self.layer),
                "covariance": "unbiased (N-1)"}


def _inception_score(logits: Tensor, splits: int) -> tuple[Tensor, Tensor]:
    """IS mean and std over `splits` parts of `(N, 1008)` logits, as torch-fidelity computes it.

    IS = exp(E_x KL(p(y|x) || p(y))) per split, with p(y) the split's mean prediction; the std is the
    population std over splits. The logits are shuffled with a fixed seed first, which matters for video:
    consecutive frames of a clip are near-duplicates and would otherwise all land in one split.
    """
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits: expected a positive int, received {splits!r}")
    n = logits.shape[0]
    if n < splits:
        raise ValueError(f"generated: expected at least splits={splits} frames for the Inception Score, "
                         f"received {n} (pass more videos or a smaller `splits`)")
    order = torch.from_numpy(np.random.RandomState(IS_SHUFFLE_SEED).permutation(n)).to(logits.device)
    logits = logits[order].double()
    log_prob = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        log_p = log_prob[i * n // splits:(i + 1) * n // splits]
        # log of the split's mean prediction via logsumexp: stays finite where a class's mean probability
        # underflows to 0, which would otherwise turn 0 * log(0) into NaN (torch-fidelity's formula).
        log_mean = torch.logsumexp(log_p, dim=0, keepdim=True) - math.log(log_p.shape[0])
        kl = (log_p.exp() * (log_p - log_mean)).sum(dim=1).mean()
        scores.append(kl.exp())
    stacked = torch.stack(scores)
    return stacked.mean(), stacked.std(correction=0)


def inception_score(generated: Tensor, *, splits: int = IS_SPLITS, value_range: ValueRange = (0.0, 1.0),
                    weights_dir: str | Path | None = None, device: str | torch.device | None = None,
                    frame_batch: int = DEFAULT_FRAME_BATCH) -> tuple[Tensor, Tensor]:
    """Inception Score of the frames of generated videos: (mean, std) over `splits` parts.

    Args:
        generated: `(B, T, C, H, W)` or `(T, C, H, W)` videos, uint8 or float in `value_range`; at least
            `splits` frames in all.
        splits: number of parts (10 is the usual protocol).
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for the Inception weights.
        device: where the network runs; CUDA when available, else CPU, by default.
        frame_batch: frames per network call.

    Returns:
        (mean, std) float64 scalar tensors. Higher is better; at least 1.
    """
    model = load_inception(weights_dir, device)
    gen = prepare_videos(generated, name="generated", value_range=value_range)
    return _inception_score(_inception_features(model, gen, frame_batch=frame_batch)["logits_unbiased"], splits)


class InceptionScore(Metric):
    """Streaming Inception Score: `update(generated)` per batch, `compute()` -> (mean, std), `reset()`.

    Keeps the 1008 logits of every frame (IS needs the whole set); same math as `inception_score`.

    Args:
        splits: number of parts (10 is the usual protocol).
        value_range: `(low, high)` of float inputs.
        weights_dir: a directory searched first for the Inception weights.
        device: where the network runs and the states start (CUDA when available by default).
        frame_batch: frames per network call.
        **kwargs: passed to `torchmetrics.Metric`.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 1.0
    logits: list[Tensor] | Tensor  # a list of batches; one tensor after a distributed sync

    def __init__(self, *, splits: int = IS_SPLITS, value_range: ValueRange = (0.0, 1.0),
                 weights_dir: str | Path | None = None, device: str | torch.device | None = None,
                 frame_batch: int = DEFAULT_FRAME_BATCH, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if not isinstance(splits, int) or splits < 1:
            raise ValueError(f"splits: expected a positive int, received {splits!r}")
        self.splits = splits
        self.value_range = check_value_range(value_range)
        self.frame_batch = frame_batch
        self._model = [load_inception(weights_dir, device)]
        self.add_state("logits", default=[], dist_reduce_fx="cat")
        self.to(resolve_device(device))  # the states start beside the network

    def protocol(self) -> dict[str, object]:
        """How the number is computed, for the run config (see `VideoMetrics.protocol`)."""
        return {"weights": "inception", **_INCEPTION_PROTOCOL, "splits": self.splits,
                "logits": "logits_unbiased (1008, no bias)", "shuffle_seed": IS_SHUFFLE_SEED}

    def update(self, generated: Tensor, *, prepared: bool = False) -> None:  # type: ignore[override]
        """Add generated videos, `(B, T, C, H, W)` or `(T, C, H, W)`.

        Args:
            generated: uint8 or float videos in `value_range`.
            prepared: True when the videos are already what `prepare_videos` returns (float
                `(B, T, C, H, W)` in [0, 1]): the input checks are skipped (how `VideoMetrics` feeds it).
        """
        gen = generated if prepared else prepare_videos(generated, name="generated", value_range=self.value_range)
        logits = _inception_features(self._model[0], gen, frame_batch=self.frame_batch)["logits_unbiased"]
        self.logits.append(logits.to(self.device))  # type: ignore[union-attr]

    def compute(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """(mean, std) of the Inception Score over everything seen since the last `reset`."""
        logits = self.logits if isinstance(self.logits, Tensor) else (
            torch.cat(self.logits) if self.logits else None)
        if logits is None:
            raise RuntimeError("InceptionScore.compute: no videos seen yet; call update(generated) first")
        return _inception_score(logits, self.splits)
