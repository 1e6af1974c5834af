"""Loading the learned metrics' resolved weights files, safely and with one clear error when a file is bad.

`weights.py` finds a file (and stays free of torch, for the command line); this module turns it into tensors
or a TorchScript module on a device. `.pth` files load with `torch.load(weights_only=True)`, which never runs
pickled code. A file that does not load (truncated download, an HTML error page saved under the weights'
name, a different kind of file) raises `WeightsLoadError` naming the file and the commands that check and
replace it, instead of torch's traceback, whose advice to retry with `weights_only=False` would mean running
whatever code the bad file holds.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor

from opusclip_track.metrics.weights import WeightsFile, WeightsLoadError, get_weights_file

__all__ = ["load_state_dict", "load_torchscript", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device`, or CUDA when available and CPU otherwise: where the learned metrics' networks run."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_state_dict(spec: WeightsFile | str, path: str | Path) -> dict[str, Tensor]:
    """A `.pth` state dict, loaded on the CPU with `torch.load(weights_only=True)`.

    Raises:
        WeightsLoadError: when the file does not load or holds no dict of tensors; the message names the
            file and `opusclip-track weights verify` / `download`.
    """
    spec = get_weights_file(spec) if isinstance(spec, str) else spec
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # permissions, a file removed meanwhile: the file system's own message is the right one
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise _load_error(spec, path, err) from None
    if not isinstance(state, dict):
        raise WeightsLoadError(_message(spec, path, f"it holds a {type(state).__name__}, not a state dict"))
    return state


def load_torchscript(spec: WeightsFile | str, path: str | Path, device: str | torch.device) -> torch.jit.ScriptModule:
    """A TorchScript archive (TorchScript code run by its interpreter, not pickled Python), in eval mode.

    Raises:
        WeightsLoadError: when the file is not a loadable TorchScript archive; the message names the file
            and `opusclip-track weights verify` / `download`.
    """
    spec = get_weights_file(spec) if isinstance(spec, str) else spec
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except OSError:
        raise
    except Exception as err:
        raise _load_error(spec, path, err) from None


def _load_error(spec: WeightsFile, path: str | Path, err: Exception) -> WeightsLoadError:
    return WeightsLoadError(_message(spec, path, _reason(err)))


def _reason(err: Exception) -> str:
    """What went wrong, in a few words; never torch's advice to load with `weights_only=False`."""
    text = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) or "weights_only" in text or "Weights only" in text:
        return "its content is not plain tensors (not a weights file, or one holding pickled code)"
    if isinstance(err, EOFError) or not text:
        return "the file is empty or ends early"
    return text.split(". ")[0].rstrip(".")  # e.g. "PytorchStreamReader failed reading zip archive: ..."


def _message(spec: WeightsFile, path: str | Path, reason: str) -> str:
    return (f"{path}: the {spec.key} weights file ({', '.join(spec.used_by)}) could not be loaded: {reason}. "
            f"It is corrupt, truncated or a different file: check it with `opusclip-track weights verify "
            f"{spec.key}`, then delete it and run `opusclip-track weights download {spec.key}` (or copy a good "
            f"{spec.filename} there).")
