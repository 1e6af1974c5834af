"""What both example models share: `FramePredictor` (rollout, loss, parameter count, input checks) and the
checks of the config fields every model has, so the conv model and the transformer compare on equal terms.

As in nanoGPT, a model file imports this module and nothing from a sibling model.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

# Inputs are clamped away from 0 and 1 before the logit so a black or white pixel stays finite.
_LOGIT_EPS = 1e-3


class PredictorConfig(Protocol):
    """The fields every example model's config has: what `FramePredictor` checks and rolls out with."""

    context_frames: int
    future_frames: int
    channels: int
    image_size: int
    residual: bool


def check_config(cfg: PredictorConfig, downsampling: int | str, more: tuple[str, ...] = ()) -> None:
    """Check the shape fields every model config has, and the fields `more` (also ints >= 1); `image_size` must
    be a multiple of `downsampling` (a number, or the name of one of those fields, e.g. `"patch_size"`).

    Raises:
        ValueError: naming the field, what was expected and what was received.
    """
    for name in ("context_frames", "future_frames", "channels", "image_size", *more):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, received {value!r}")
    factor = getattr(cfg, downsampling) if isinstance(downsampling, str) else downsampling
    if cfg.image_size % factor:
        raise ValueError(f"image_size: expected a multiple of {factor}, received {cfg.image_size}")


class FramePredictor(nn.Module):
    """Shared interface: `forward(context) -> future` over a fixed horizon, plus rollout, loss and checks.

    A subclass sets `self.config` (a `PredictorConfig`) and implements
    `_predict_logits(context) -> (B, T_future, C, H, W)`. The output is a correction on top of "the last
    context frame stays still" when `config.residual`: the logits are added to the logit of that frame.
    """

    config: PredictorConfig

    def _predict_logits(self, context: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, context: Tensor) -> Tensor:
        """Predict `future_frames` frames after `context` (B, T_ctx, C, H, W) in [0, 1]. -> (B, T_future, C, H, W)"""
        self._check_clip("context", context, self.config.context_frames)
        logits = self._predict_logits(context)  # (B, T_future, C, H, W)
        if self.config.residual:
            last = context[:, -1:].clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)  # (B, 1, C, H, W)
            logits = logits + torch.logit(last)
        return torch.sigmoid(logits)

    @torch.no_grad()
    def generate(self, context: Tensor, num_frames: int) -> Tensor:
        """Roll the model out for `num_frames` frames, feeding predictions back as context in chunks.

        Args:
            context: (B, T, C, H, W) in [0, 1] with T >= `context_frames`; the last `context_frames` are used.
            num_frames: How many frames to produce; any positive number (not limited to the horizon).

        Returns:
            (B, num_frames, C, H, W) in [0, 1], the frames after `context`.
        """
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames: expected an int >= 1, received {num_frames!r}")
        t_ctx = self.config.context_frames
        self._check_clip("context", context, t_ctx, at_least=True)
        frames = context[:, -t_ctx:]  # (B, T_ctx, C, H, W)
        produced: list[Tensor] = []
        for _ in range(-(-num_frames // self.config.future_frames)):  # ceil division: number of chunks
            future = self(frames)  # (B, T_future, C, H, W)
            produced.append(future)
            frames = torch.cat([frames, future], dim=1)[:, -t_ctx:]
        return torch.cat(produced, dim=1)[:, :num_frames]

    def loss(self, clip: Tensor) -> Tensor:
        """Mean squared error of the predicted future frames of `clip` (B, T, C, H, W), T >= T_ctx + T_future."""
        t_ctx, t_future = self.config.context_frames, self.config.future_frames
        self._check_clip("clip", clip, t_ctx + t_future, at_least=True)
        prediction = self(clip[:, :t_ctx])
        return F.mse_loss(prediction, clip[:, t_ctx:t_ctx + t_future])

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_clip(self, name: str, clip: Tensor, frames: int, at_least: bool = False) -> None:
        cfg = self.config
        expected = (f"(B, {'>=' if at_least else ''}{frames}, {cfg.channels}, {cfg.image_size}, "
                    f"{cfg.image_size})")
        ok = (isinstance(clip, Tensor) and clip.ndim == 5 and clip.is_floating_point()
              and (clip.shape[1] >= frames if at_least else clip.shape[1] == frames)
              and tuple(clip.shape[2:]) == (cfg.channels, cfg.image_size, cfg.image_size))
        if not ok:
            received = (f"shape {tuple(clip.shape)}, dtype {clip.dtype}" if isinstance(clip, Tensor)
                        else type(clip).__name__)
            raise ValueError(f"{name}: expected a float tensor {expected} in [0, 1], received {received}")
