"""Random-init stand-ins for the pretrained feature networks, written under their real file names.

The pretrained files cannot be downloaded everywhere (CI, air-gapped machines), so the tests and the benchmarks
write a network of the real architecture with random weights where the weights resolver looks: torch-fidelity's
Inception-v3 (FID, IS) as a state dict with the real key names, and I3D (FVD) as TorchScript with the detector's
call signature (`_i3d.InceptionI3d`). torch-fidelity, torchmetrics and our loaders then read them as they read
the real files. BatchNorm statistics are calibrated on one batch, so activations stay O(1) through the depth (a
random network with unit running variances blows up or vanishes). Their scores mean nothing; their shapes,
dtypes and code paths are the real ones. Seed torch before calling for reproducible weights.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor, nn

from opusclip_track.metrics._i3d import InceptionI3d
from opusclip_track.metrics.weights import get_weights_file

__all__ = ["calibrate_batchnorm", "write_random_i3d", "write_random_inception"]


def calibrate_batchnorm(model: nn.Module, *inputs: object) -> None:
    """Set every BatchNorm's running statistics to those of one forward pass of `inputs`; leaves `model` in eval."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one batch, exactly its statistics
    model.train()
    with torch.no_grad():
        model(*inputs)
    model.eval()


def write_random_inception(directory: str | Path, calibration: Tensor) -> Path:
    """torch-fidelity's Inception-v3 with random weights, as `<directory>/<the FID weights' file name>`.

    Args:
        directory: where the weights resolver will look (`weights_dir`).
        calibration: uint8 images `(N, 3, H, W)` for the BatchNorm statistics.
    """
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # torchvision's Inception-v3 without the aux head has torch-fidelity's module names; the real file has a
    # 1008-class fc. torch-fidelity loads it strictly, so a key-name mismatch would fail right here.
    state = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True).state_dict()
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048) * 0.02, torch.zeros(1008)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=buffer)
    calibrate_batchnorm(model, calibration)
    path = Path(directory) / get_weights_file("inception").filename
    torch.save(model.state_dict(), path)
    return path


def write_random_i3d(directory: str | Path, calibration: Tensor) -> Path:
    """The I3D detector with random weights, scripted, as `<directory>/<the FVD weights' file name>`.

    Args:
        directory: where the weights resolver will look (`weights_dir`).
        calibration: videos `(B, 3, T, H, W)` in [-1, 1] for the BatchNorm statistics.
    """
    model = InceptionI3d()
    calibrate_batchnorm(model, calibration)
    path = Path(directory) / get_weights_file("i3d").filename
    torch.jit.script(model).save(str(path))
    return path
