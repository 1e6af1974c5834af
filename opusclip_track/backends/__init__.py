"""Backends by name. Adding one is a module with a `Backend` subclass and one entry here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import Backend

if TYPE_CHECKING:
    from ..config import TrackingConfig

# name -> "module:Class", imported only when the backend is used (optional libraries stay optional).
REGISTRY: dict[str, str] = {
    "tensorboard": "opusclip_track.backends.tensorboard:TensorBoardBackend",
    "wandb": "opusclip_track.backends.wandb:WandbBackend",
    "mlflow": "opusclip_track.backends.mlflow:MlflowBackend",
}


def get_backend_class(name: str) -> type[Backend]:
    """The backend class registered under `name`."""
    if name not in REGISTRY:
        raise ValueError(f"backend: expected one of {sorted(REGISTRY)}, received {name!r}")
    module_name, class_name = REGISTRY[name].split(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls


def enabled_backends(config: TrackingConfig) -> list[str]:
    """The registry names a run writes to, in order: TensorBoard when `use_tensorboard`, W&B when `use_wandb`
    (unless `wandb_mode="disabled"`), then `config.backends` (each name once)."""
    names = [name for name, on in (("tensorboard", config.use_tensorboard),
                                   ("wandb", config.use_wandb and config.wandb_mode != "disabled")) if on]
    return names + [name for name in dict.fromkeys(config.backends) if name not in names]


__all__ = ["REGISTRY", "Backend", "enabled_backends", "get_backend_class"]
