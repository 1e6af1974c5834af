"""Inception-v1 I3D (Carreira & Zisserman 2017, Kinetics-400): the FVD feature network's architecture.

FVD loads the pretrained network as the TorchScript file `i3d_torchscript.pt` (the StyleGAN-V port of the
tf.hub model the original FVD code uses), so this module is not needed to compute FVD. It exists so the
pipeline can be tested end to end without the pretrained file: `InceptionI3d` has the same layers, the same
TensorFlow "SAME" padding and the same call signature, `model(videos, rescale, resize, return_features)`,
and scripts with `torch.jit.script`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_CLASSES = 400
INPUT_SIZE = 224

# (out 1x1, reduce 3x3, out 3x3, reduce "5x5" (3x3 in I3D), out "5x5", pool projection), per Inception block.
_MIXED: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _same_padding(size: list[int], kernel: list[int], stride: list[int]) -> list[int]:
    """F.pad amounts (last dim first) reproducing TensorFlow 'SAME' padding, which pads more at the end."""
    pad: list[int] = []
    for i in range(len(size) - 1, -1, -1):
        if size[i] % stride[i] == 0:
            total = max(kernel[i] - stride[i], 0)
        else:
            total = max(kernel[i] - size[i] % stride[i], 0)
        pad.append(total // 2)
        pad.append(total - total // 2)
    return pad


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm + ReLU with TF 'SAME' padding; the logits layer uses bias and neither."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), *, norm_act: bool = True) -> None:
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)
        self.norm_act = norm_act
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=not norm_act)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if norm_act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, _same_padding(list(x.shape[2:]), self.kernel, self.stride))
        x = self.conv3d(x)
        if self.norm_act:
            x = F.relu(self.bn(x))
        return x


class MaxPool3dSame(nn.Module):
    """Max pooling with TF 'SAME' padding (zero padding is exact here: inputs are post-ReLU, >= 0)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)
        self.pool = nn.MaxPool3d(kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.pad(x, _same_padding(list(x.shape[2:]), self.kernel, self.stride)))


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; pool->1x1) concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """RGB I3D for Kinetics-400 with the FVD detector's call signature.

    Example:
        >>> model = torch.jit.script(InceptionI3d().eval())  # doctest: +SKIP
        >>> feats = model(torch.zeros(2, 3, 16, 224, 224), rescale=False, resize=False, return_features=True)
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3D(3, 64, (7, 7, 7), (2, 2, 2))),
            ("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
        ]
        channels = 192
        for name, widths in _MIXED.items():
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", MaxPool3dSame((3, 3, 3), (2, 2, 2))))
            if name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", MaxPool3dSame((2, 2, 2), (2, 2, 2))))
            block = InceptionBlock(channels, widths)
            channels = block.out_channels
            layers.append((name, block))
        self.features = nn.Sequential(OrderedDict(layers))
        self.logits = Unit3D(channels, num_classes, norm_act=False)
        self.input_size = INPUT_SIZE

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> Tensor:
        """Class logits averaged over time (`return_features`) or class probabilities.

        Args:
            x: `(B, 3, T, H, W)` videos; in [-1, 1], or in [0, 255] with `rescale=True`.
            rescale: map [0, 255] to [-1, 1] first.
            resize: resize frames to 224x224 first (trilinear, time kept).
            return_features: return the raw pre-softmax logits `(B, 400)` (what FVD uses).
        """
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            size = [x.shape[2], self.input_size, self.input_size]
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        x = self.features(x)  # (B, 1024, T/8, 7, 7) at 224x224
        x = F.avg_pool3d(x, kernel_size=[min(2, x.shape[2]), x.shape[3], x.shape[4]], stride=1)
        logits = self.logits(x).mean(dim=[2, 3, 4])  # (B, 400): averaged over the remaining time steps
        return logits if return_features else logits.softmax(dim=1)
