"""What PSNR and SSIM share: a score per frame, reduced to one mean and to a per-timestep curve.

The streaming class keeps every per-frame score (a `(B, T)` float64 tensor per `update`; a few bytes per
frame) rather than running sums, so that the same state yields both the overall mean and the curve over the
generated horizon, and gathers across processes with `cat`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from opusclip_track._checks import ValueRange, check_value_range
from opusclip_track.metrics._input import prepare_pair

# (generated, reference) prepared float (B, T, C, H, W) in [0, 1] -> (B, T) float64 scores.
FrameScoreFn = Callable[[Tensor, Tensor], Tensor]


def frame_mean(scores: Tensor | list[Tensor], *, name: str) -> Tensor:
    """Mean over every frame of every clip (clips of different lengths weigh by their frame count)."""
    # After a distributed sync a `cat` state is one (N, T) tensor; before it, a list of (B, T) tensors.
    if isinstance(scores, Tensor):
        return scores.mean()
    flat = [s.flatten() for s in scores]
    if not flat:
        raise RuntimeError(f"{name}.compute: no videos seen yet; call update(generated, reference) first")
    return torch.cat(flat).mean()


def frame_scores(scores: Tensor | list[Tensor], *, name: str, method: str = "compute_frame_scores") -> Tensor:
    """Every score as one `(N, T)` tensor: a row per clip, in the order the clips were added."""
    if isinstance(scores, Tensor):  # one (B, T) batch (the functional path) or a synced (N, T) state
        return scores
    parts = list(scores)
    if not parts:
        raise RuntimeError(f"{name}.{method}: no videos seen yet; call update(generated, reference) first")
    lengths = sorted({p.shape[-1] for p in parts})
    if len(lengths) > 1:
        raise ValueError(f"{name}.{method}: expected the same number of frames T in every update, "
                         f"received T in {lengths}")
    return torch.cat(parts)


def frame_curve(scores: Tensor | list[Tensor], *, name: str) -> Tensor:
    """Mean over clips for each timestep: a `(T,)` curve of quality along the generated horizon."""
    return frame_scores(scores, name=name, method="compute_curve").mean(dim=0)


class FramewiseMetric(Metric):
    """Base of a streaming per-frame metric: `update` per batch, `compute` (mean), `compute_curve` (per t).

    Subclasses set `_score_fn = staticmethod(...)` (the private per-frame math shared with the functional
    twin) or override `_update_prepared`, and set the usual torchmetrics class attributes. Every metric of
    the package takes `update(..., prepared=True)`: `update` minus the input checks, for `VideoMetrics`.
    """

    is_differentiable = False
    full_state_update = False
    _score_fn: FrameScoreFn
    scores: list[Tensor] | Tensor  # a list of (B, T) batches; one (N, T) tensor after a distributed sync

    def __init__(self, *, value_range: ValueRange = (0.0, 1.0), **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.value_range = check_value_range(value_range)
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, generated: Tensor, reference: Tensor, *, prepared: bool = False) -> None:  # type: ignore[override]
        """Add a batch of video pairs, `(B, T, C, H, W)` or `(T, C, H, W)` each.

        Args:
            generated: uint8 or float videos in `value_range`.
            reference: the same shape as `generated`.
            prepared: True when the videos are already what `prepare_pair` returns (float
                `(B, T, C, H, W)` in [0, 1], same shape): the input checks are skipped. `VideoMetrics`
                prepares a batch once for all its metrics this way.
        """
        if not prepared:
            generated, reference = prepare_pair(generated, reference, value_range=self.value_range)
        self._update_prepared(generated, reference)

    def _update_prepared(self, gen: Tensor, ref: Tensor) -> None:
        """Add prepared videos (float `(B, T, C, H, W)` in [0, 1]): the hook a subclass may override."""
        self.scores.append(self._score_fn(gen, ref))  # type: ignore[union-attr]

    def compute(self) -> Tensor:
        """Mean over all frames of all clips seen since the last `reset` (float64 scalar)."""
        return frame_mean(self.scores, name=type(self).__name__)

    def compute_curve(self) -> Tensor:
        """Per-timestep mean over all clips seen: a float64 `(T,)` tensor (synced across processes)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return frame_curve(self.scores, name=type(self).__name__).clone()

    def compute_frame_scores(self) -> Tensor:
        """Every frame's score: a float64 `(N, T)` tensor, one row per clip in the order they were added
        (synced across processes). `.mean(dim=1)` gives each clip's score, `.mean(dim=0)` the curve."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return frame_scores(self.scores, name=type(self).__name__).clone()
