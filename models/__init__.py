"""Example video-prediction models that show the tracker end to end, chosen by name with `build_model`.

They live in the repository, not in the installed `opusclip_track` package (a top-level `models` package
would shadow a user's own): the scripts put the repository root on `sys.path`, and so does pytest.

Both models take the first `context_frames` of a clip and predict the next `future_frames`:
`forward(context (B, T_ctx, C, H, W)) -> (B, T_future, C, H, W)` in [0, 1], and
`generate(context, num_frames)` rolls out any number of frames.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from models.base import FramePredictor
from models.transformer import TransformerConfig, TransformerModel
from models.video_generation import VideoGenerationConfig, VideoGenerationModel

__all__ = ["FramePredictor", "TransformerConfig", "TransformerModel", "VideoGenerationConfig",
           "VideoGenerationModel", "MODELS", "ModelName", "build_model"]

ModelName = Literal["video_generation", "transformer"]

# name -> (config class, model class)
MODELS: dict[str, tuple[type, type[FramePredictor]]] = {
    "video_generation": (VideoGenerationConfig, VideoGenerationModel),
    "transformer": (TransformerConfig, TransformerModel),
}


def build_model(name: ModelName, **overrides: Any) -> FramePredictor:
    """Build an example model by name, its config's defaults replaced by `overrides`.

    Args:
        name: `"video_generation"` (conv U-Net) or `"transformer"` (space-time patch transformer).
        **overrides: Config fields, e.g. `context_frames=4, future_frames=12, image_size=64`; both configs
            share `context_frames`, `future_frames`, `channels`, `image_size` and `residual`.

    Raises:
        ValueError: Unknown `name`, or an override that is not a field of that model's config.

    Example:
        >>> model = build_model("transformer", image_size=32, n_layer=2)
    """
    if name not in MODELS:
        raise ValueError(f"name: expected one of {sorted(MODELS)}, received {name!r}")
    config_cls, model_cls = MODELS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"overrides: expected fields of {config_cls.__name__} ({', '.join(sorted(fields))}), "
                         f"received unknown {', '.join(unknown)}")
    return model_cls(config_cls(**overrides))
