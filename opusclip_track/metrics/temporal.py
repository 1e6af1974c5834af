"""Temporal consistency: frame-to-frame change of generated videos measured against their references.

Per-frame metrics (PSNR, SSIM, LPIPS, FID) are blind to flicker: a video whose brightness jumps every frame
can score as well as a steady one. With videos mapped to [0, 1] and the temporal difference
`Δv[t] = v[t+1] - v[t]` (over T-1 consecutive pairs), two numbers are reported:

- `flicker = mean |Δgen - Δref|` over clips, consecutive frame pairs, channels and pixels. 0 exactly when
  the generated video changes from frame to frame the way the reference does; it grows with flicker, jitter
  and motion that differs from the reference. A constant per-pixel error (a steady colour shift) cancels
  out, so it measures temporal errors only. Lower is better; logged as `video/flicker`.
- `temporal_diff = mean |Δgen| - mean |Δref|`, signed: positive when the generated video changes more than
  the reference (flicker, noise), negative when it changes less (frozen or over-smoothed motion). 0 is
  best; logged as `video/temporal_diff`.

Both need at least two frames.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from opusclip_track._checks import ValueRange, check_value_range
from opusclip_track.metrics._input import prepare_pair


def _temporal_update(gen: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Per-clip sums over prepared `(B, T, C, H, W)` videos in [0, 1]: (|Δgen - Δref|, |Δgen|, |Δref|, count).

    The sums are `(B,)` float64, one per clip, so that streaming sums equal a one-shot computation; `count` is
    the number of values each clip's sum covers, `(T-1) * C * H * W`.
    """
    if gen.shape[1] < 2:
        raise ValueError(f"generated: expected at least 2 frames (T >= 2) for temporal metrics, "
                         f"received shape {tuple(gen.shape)}")
    d_gen = gen.diff(dim=1)  # (B, T-1, C, H, W)
    d_ref = ref.diff(dim=1)
    dims = (1, 2, 3, 4)
    return ((d_gen - d_ref).abs().sum(dim=dims, dtype=torch.float64), d_gen.abs().sum(dim=dims, dtype=torch.float64),
            d_ref.abs().sum(dim=dims, dtype=torch.float64), d_gen[0].numel())


def _flicker_compute(abs_diff_sum: Tensor, count: Tensor | int) -> Tensor:
    return abs_diff_sum / count


def _temporal_diff_compute(abs_gen_sum: Tensor, abs_ref_sum: Tensor, count: Tensor | int) -> Tensor:
    return (abs_gen_sum - abs_ref_sum) / count


def flicker(generated: Tensor, reference: Tensor, *, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """Mean absolute difference between the frame-to-frame changes of generated and reference videos.

    `mean |(gen[t+1] - gen[t]) - (ref[t+1] - ref[t])|` over clips, the T-1 consecutive frame pairs, channels
    and pixels, on videos mapped to [0, 1]; see the module docstring.

    Args:
        generated: `(B, T, C, H, W)` or `(T, C, H, W)` videos with T >= 2, uint8 or float in `value_range`.
        reference: the same shape as `generated`.
        value_range: `(low, high)` of float inputs.

    Returns:
        float64 scalar tensor in [0, 2]; 0 for identical videos. Lower is better.
    """
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    abs_diff, _, _, count = _temporal_update(gen, ref)
    return _flicker_compute(abs_diff.sum(), count * len(abs_diff))


def temporal_diff(generated: Tensor, reference: Tensor, *, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """Signed excess of frame-to-frame change: `mean |Δgen| - mean |Δref|` on videos mapped to [0, 1].

    Positive when the generated videos change more than the references (flicker), negative when they
    change less (frozen motion). Arguments as in `flicker`. Returns a float64 scalar tensor; 0 is best.
    """
    gen, ref = prepare_pair(generated, reference, value_range=value_range)
    _, abs_gen, abs_ref, count = _temporal_update(gen, ref)
    return _temporal_diff_compute(abs_gen.sum(), abs_ref.sum(), count * len(abs_gen))


class TemporalFlicker(Metric):
    """Streaming flicker: `update(generated, reference)` per batch, `compute()` -> flicker (lower is
    better), `compute_temporal_diff()` -> the signed `temporal_diff`, `reset()`. Same math as `flicker`.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0
    abs_diff_sum: Tensor
    abs_gen_sum: Tensor
    abs_ref_sum: Tensor
    count: Tensor
    clip_scores: list[Tensor] | Tensor  # a list of (B, 2) batches; one (N, 2) tensor after a distributed sync

    def __init__(self, *, value_range: ValueRange = (0.0, 1.0), **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.value_range = check_value_range(value_range)
        for state in ("abs_diff_sum", "abs_gen_sum", "abs_ref_sum"):
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        # (B, 2) per update: each clip's flicker and temporal_diff, for per-clip reports (16 bytes a clip).
        self.add_state("clip_scores", default=[], dist_reduce_fx="cat")

    def update(self, generated: Tensor, reference: Tensor, *, prepared: bool = False) -> None:  # type: ignore[override]
        """Add a batch of video pairs, `(B, T, C, H, W)` or `(T, C, H, W)` each, T >= 2.

        Args:
            generated: uint8 or float videos in `value_range`.
            reference: the same shape as `generated`.
            prepared: True when the videos are already what `prepare_pair` returns (float
                `(B, T, C, H, W)` in [0, 1], same shape): the input checks are skipped. `VideoMetrics`
                prepares a batch once for all its metrics this way.
        """
        gen, ref = (generated, reference) if prepared else prepare_pair(generated, reference,
                                                                          value_range=self.value_range)
        abs_diff, abs_gen, abs_ref, count = _temporal_update(gen, ref)
        self.abs_diff_sum += abs_diff.sum()
        self.abs_gen_sum += abs_gen.sum()
        self.abs_ref_sum += abs_ref.sum()
        self.count += count * len(abs_diff)
        per_clip = (_flicker_compute(abs_diff, count), _temporal_diff_compute(abs_gen, abs_ref, count))
        self.clip_scores.append(torch.stack(per_clip, dim=1))  # type: ignore[union-attr]

    def compute(self) -> Tensor:
        """Flicker over every frame pair seen since the last `reset` (float64 scalar)."""
        self._check_seen("compute")
        return _flicker_compute(self.abs_diff_sum, self.count)

    def compute_temporal_diff(self) -> Tensor:
        """Signed `temporal_diff` over every frame pair seen (float64 scalar; synced across processes)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            self._check_seen("compute_temporal_diff")
            return _temporal_diff_compute(self.abs_gen_sum, self.abs_ref_sum, self.count).clone()

    def compute_per_clip(self) -> tuple[Tensor, Tensor]:
        """Each clip's `(flicker, temporal_diff)`: two float64 `(N,)` tensors in the order the clips were added
        (synced across processes)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            self._check_seen("compute_per_clip")
            scores = self.clip_scores if isinstance(self.clip_scores, Tensor) else torch.cat(self.clip_scores)
            return scores[:, 0].clone(), scores[:, 1].clone()

    def _check_seen(self, method: str) -> None:
        if int(self.count) == 0:
            raise RuntimeError(f"TemporalFlicker.{method}: no videos seen yet; "
                               "call update(generated, reference) first")
