"""A small convolutional video generator: predicts the future frames of a clip from its first frames.

The context frames are stacked along the channel axis, folded 2x2 pixels into channels (pixel unshuffle, so
the convolutions run at half resolution) and run through a 2-D U-Net (two downsamplings, residual blocks in
the middle, skip connections), which outputs every future frame at once. The output is a
correction on top of "the last context frame stays still": the network adds logits to the logit of that
frame, so an untrained model already copies it and training learns the motion.

`FramePredictor` (`models/base.py`), the base both example models share, adds `generate`, `loss`,
`num_parameters` and the input checks.

Example:
    >>> model = VideoGenerationModel(VideoGenerationConfig())
    >>> clip = torch.rand(8, 16, 3, 64, 64)                 # (B, T, C, H, W) in [0, 1]
    >>> future = model(clip[:, :4])                          # (8, 12, 3, 64, 64)
    >>> longer = model.generate(clip[:, :4], num_frames=30)  # (8, 30, 3, 64, 64), rolled out in chunks
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from models.base import FramePredictor, check_config


@dataclass
class VideoGenerationConfig:
    context_frames: int = 4  # frames the model sees (T_ctx)
    future_frames: int = 12  # frames it predicts in one forward (T_future); 4 + 12 = a 16-frame clip
    channels: int = 3  # C
    image_size: int = 64  # frames are image_size x image_size
    width: int = 32  # channels of the first conv stage; x2 per downsampling
    num_res_blocks: int = 2  # residual blocks at the lowest resolution
    residual: bool = True  # predict a change of the last context frame rather than frames from scratch

    def __post_init__(self) -> None:
        check_config(self, downsampling=8)  # three halvings: the fold and two Down stages
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 8 or self.width % 8:
            raise ValueError(f"width: expected a multiple of 8 (GroupNorm groups), received {self.width!r}")


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Down(nn.Module):
    """Halve the resolution, double the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv = nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.silu(self.norm(x)))


class Up(nn.Module):
    """Double the resolution, halve the channels, then merge the encoder's skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv = nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1)
        self.merge = nn.Conv2d(channels, channels // 2, 3, padding=1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.conv(F.silu(self.norm(x)))
        return self.merge(torch.cat([x, skip], dim=1))


class VideoGenerationModel(FramePredictor):
    """Conv U-Net over context frames stacked as channels -> all future frames at once. See module doc."""

    config: VideoGenerationConfig

    def __init__(self, config: VideoGenerationConfig) -> None:
        super().__init__()
        self.config = config  # checked when it was made (`__post_init__`)
        w = config.width
        # Folding 2x2 pixels into channels cuts the cost of the full-resolution convs by 4 at equal width.
        self.fold, self.unfold = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.stem = nn.Conv2d(4 * config.context_frames * config.channels, w, 3, padding=1)
        self.down1, self.down2 = Down(w), Down(2 * w)
        self.mid = nn.Sequential(*[ResBlock(4 * w) for _ in range(config.num_res_blocks)])
        self.up2, self.up1 = Up(4 * w), Up(2 * w)
        self.head_norm = nn.GroupNorm(8, w)
        self.head = nn.Conv2d(w, 4 * config.future_frames * config.channels, 3, padding=1)
        # Start from "nothing moves" (residual) or mid-grey: a zero head gives logits of exactly 0.
        for param in self.head.parameters():
            nn.init.zeros_(param)

    def _predict_logits(self, context: Tensor) -> Tensor:
        b, t, c, h, w = context.shape
        x = self.fold(context.reshape(b, t * c, h, w) * 2 - 1)  # (B, 4 T C, H/2, W/2), centred on 0
        s1 = self.stem(x)  # (B, w, H/2, W/2)
        s2 = self.down1(s1)  # (B, 2w, H/4, W/4)
        x = self.mid(self.down2(s2))  # (B, 4w, H/8, W/8)
        x = self.up1(self.up2(x, s2), s1)  # (B, w, H/2, W/2)
        x = self.unfold(self.head(F.silu(self.head_norm(x))))  # (B, T_future * C, H, W)
        return x.reshape(b, self.config.future_frames, c, h, w)
