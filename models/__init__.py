"""Example video-prediction models that show the tracker end to end, chosen by name with `build_model`.

They live in the repository, not in the installed `opusclip_track` package (a top-level `models` package
would shadow a user's own): the scripts put the repository root on `sys.path`, and so does pytest.

Both models take the first `context_frames` of a clip and predict the next `future_frames`:
`forward(context (B, T_ctx, C, H, W)) -> (B, T_future, C, H, W)` in [0, 1], and
`generate(context, num_frames)` rolls out any number of frames.

The names below load on first use, so importing `models.sweep_recipe` (what `scripts/sweep.py` needs to say a
finished sweep is already complete) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.base import FramePredictor
    from models.registry import MODELS, ModelName, build_model, model_config, model_options
    from models.transformer import TransformerConfig, TransformerModel
    from models.video_generation import VideoGenerationConfig, VideoGenerationModel

__all__ = ["FramePredictor", "TransformerConfig", "TransformerModel", "VideoGenerationConfig",
           "VideoGenerationModel", "MODELS", "ModelName", "build_model", "model_config", "model_options"]

_LAZY = {"FramePredictor": "models.base", "TransformerConfig": "models.transformer",
         "TransformerModel": "models.transformer", "VideoGenerationConfig": "models.video_generation",
         "VideoGenerationModel": "models.video_generation", "MODELS": "models.registry",
         "ModelName": "models.registry", "build_model": "models.registry", "model_config": "models.registry",
         "model_options": "models.registry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
