"""Backends by name. Adding one is a module with a `Backend` subclass and one entry here."""

from __future__ import annotations

import importlib

from .base import Backend

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


__all__ = ["REGISTRY", "Backend", "get_backend_class"]
