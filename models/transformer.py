"""A space-time patch transformer that predicts the future frames of a clip from its first frames.

Each context frame is cut into `patch_size` x `patch_size` patches, each patch becomes a token; every future
frame is represented by learned query tokens at the same patch positions. Tokens get a learned spatial and a
learned temporal position embedding, go through pre-LN transformer blocks with full attention over context
and queries, and the query tokens are projected back to pixels. Like the conv model, the output is a
correction of the last context frame (see `FramePredictor`), and `forward`/`generate`/`loss` are the same.

Example:
    >>> model = TransformerModel(TransformerConfig())
    >>> future = model(torch.rand(8, 4, 3, 64, 64))   # (8, 12, 3, 64, 64)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from models.base import FramePredictor, check_config


@dataclass
class TransformerConfig:
    context_frames: int = 4  # frames the model sees (T_ctx)
    future_frames: int = 12  # frames it predicts in one forward (T_future)
    channels: int = 3  # C
    image_size: int = 64  # frames are image_size x image_size
    patch_size: int = 16  # P: a token is a P x P patch of one frame
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    residual: bool = True  # predict a change of the last context frame rather than frames from scratch

    def __post_init__(self) -> None:
        check_config(self, downsampling="patch_size", more=("patch_size", "n_layer", "n_head", "n_embd"))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: expected a multiple of n_head={self.n_head}, received {self.n_embd}")


class SelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape  # (B, N, D), N = all tokens of all frames
        q, k, v = self.qkv(x).view(b, n, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)  # (B, h, N, d/h)
        # Full attention: query tokens of a future frame may look at other future frames too (predicted jointly).
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(config.n_embd), SelfAttention(config)
        self.ln2, self.mlp = nn.LayerNorm(config.n_embd), MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerModel(FramePredictor):
    """Patch tokens of the context + learned query tokens for the future -> pixels. See module doc."""

    config: TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config  # checked when it was made (`__post_init__`)
        p, d = config.patch_size, config.n_embd
        self.num_patches = (config.image_size // p) ** 2  # tokens per frame
        self.patch_embed = nn.Linear(config.channels * p * p, d)
        self.query = nn.Parameter(torch.zeros(1, 1, 1, d))  # the token for "a future patch, to predict"
        self.pos_space = nn.Parameter(torch.randn(1, 1, self.num_patches, d) * 0.02)  # per patch position
        self.pos_time = nn.Parameter(torch.randn(1, config.context_frames + config.future_frames, 1, d) * 0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.channels * p * p)
        # Start from "nothing moves" (residual) or mid-grey: a zero head gives logits of exactly 0.
        for param in self.head.parameters():
            nn.init.zeros_(param)

    def _patchify(self, frames: Tensor) -> Tensor:
        b, t, c, h, w = frames.shape
        p = self.config.patch_size
        x = frames.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)  # (B, T, H/p, W/p, C, p, p)
        return x.reshape(b, t, self.num_patches, c * p * p)  # (B, T, N, C p p)

    def _unpatchify(self, tokens: Tensor, height: int, width: int) -> Tensor:
        b, t = tokens.shape[:2]
        c, p = self.config.channels, self.config.patch_size
        x = tokens.reshape(b, t, height // p, width // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, t, c, height, width)  # (B, T, C, H, W)

    def _predict_logits(self, context: Tensor) -> Tensor:
        b, t_ctx, _, h, w = context.shape
        t_future = self.config.future_frames
        ctx = self.patch_embed(self._patchify(context * 2 - 1))  # (B, T_ctx, N, D), inputs centred on 0
        # A future token starts as its patch in the last context frame plus a learned offset: it carries the
        # content that probably stays, and attention only has to learn the motion (much faster to train).
        queries = (ctx[:, -1:] + self.query).expand(-1, t_future, -1, -1)  # (B, T_future, N, D)
        x = torch.cat([ctx, queries], dim=1) + self.pos_space + self.pos_time  # (B, T_ctx + T_future, N, D)
        x = self.blocks(self.drop(x.flatten(1, 2)))  # (B, (T_ctx + T_future) N, D)
        x = self.head(self.ln_f(x[:, t_ctx * self.num_patches:]))  # (B, T_future N, C p p)
        return self._unpatchify(x.view(b, t_future, self.num_patches, -1), h, w)
