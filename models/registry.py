"""The example models by name: `MODELS`, `model_config` (a checked config) and `build_model`."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from models.base import FramePredictor
from models.transformer import TransformerConfig, TransformerModel
from models.video_generation import VideoGenerationConfig, VideoGenerationModel

ModelName = Literal["video_generation", "transformer"]

# name -> (config class, model class)
MODELS: dict[str, tuple[type, type[FramePredictor]]] = {
    "video_generation": (VideoGenerationConfig, VideoGenerationModel),
    "transformer": (TransformerConfig, TransformerModel),
}


def model_options(name: str) -> set[str]:
    """The config fields of model `name` (what `build_model` takes as overrides)."""
    return {f.name for f in dataclasses.fields(_classes(name)[0])}


def model_config(name: ModelName, **overrides: Any) -> Any:
    """The config of model `name`, its defaults replaced by `overrides` and checked (nothing is built).

    Raises:
        ValueError: Unknown `name`, an override that is not a field of that model's config, or a value the config
            refuses (naming the field, e.g. `width: expected a multiple of 8 (GroupNorm groups), received 4`).
    """
    config_cls = _classes(name)[0]
    fields = model_options(name)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"overrides: expected fields of {config_cls.__name__} ({', '.join(sorted(fields))}), "
                         f"received unknown {', '.join(unknown)}")
    return config_cls(**overrides)


def build_model(name: ModelName, **overrides: Any) -> FramePredictor:
    """Build an example model by name, its config's defaults replaced by `overrides`.

    Args:
        name: `"video_generation"` (conv U-Net) or `"transformer"` (space-time patch transformer).
        **overrides: Config fields, e.g. `context_frames=4, future_frames=12, image_size=64`; both configs
            share `context_frames`, `future_frames`, `channels`, `image_size` and `residual`.

    Raises:
        ValueError: as `model_config`.

    Example:
        >>> model = build_model("transformer", image_size=32, n_layer=2)
    """
    return _classes(name)[1](model_config(name, **overrides))


def _classes(name: str) -> tuple[type, type[FramePredictor]]:
    if name not in MODELS:
        raise ValueError(f"name: expected one of {sorted(MODELS)}, received {name!r}")
    return MODELS[name]


__all__ = ["MODELS", "ModelName", "build_model", "model_config", "model_options"]
