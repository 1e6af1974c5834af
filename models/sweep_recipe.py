"""The example model's sweep objective: `models.training.train` on a tiny CPU recipe, swept parameters on top.

Parameters named like `TrainConfig` fields or their aliases (`lr` or `learning_rate`, `epochs` or `max_epochs`,
`batch_size`, `max_steps`, `weight_decay`, ...) set those; any other name is an option of the model (`width`,
`num_res_blocks`, `n_layer`, ...). Every swept value takes effect: sweeping `epochs` trains that many epochs, so
the base recipe's `max_steps` no longer caps it (sweep `max_steps` as well to cap it).

The objective declares what it accepts (`sweep_parameters`) and what it returns (`sweep_metrics`), so
`run_sweep` refuses a misspelled parameter or metric before the first trial.

Example:
    >>> config = SweepConfig.from_yaml("sweeps/quick_grid.yaml")
    >>> result = run_sweep(config, SweepRecipe.for_config(config))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads when a trial trains, not when a script only reads the sweep file
    from models.training import TrainConfig
    from opusclip_track.sweep import SweepConfig, TrialContext

# The recipe every trial starts from: small enough for a CPU (16x16 frames, 2 + 2 frames, PSNR only).
BASE_RECIPE: dict[str, Any] = {
    "model": "video_generation", "image_size": 16, "context_frames": 2, "future_frames": 2,
    "train_clips": 128, "val_clips": 8, "batch_size": 8, "epochs": 100, "max_steps": 12, "eval_every": 3,
    "log_every": 3, "warmup_steps": 2, "metrics": ("psnr",), "sample_clips": 1, "device": "auto",
    "model_options": {"width": 8, "num_res_blocks": 1},
}
# What `train` returns besides the evaluation's `video/*` numbers.
_TRAIN_RESULTS = frozenset({"val/loss", "train/loss", "val/best_loss", "best_step", "steps", "train_time_s"})
# Keys `VideoMetrics.compute` adds beside `video/<name>` for some metrics.
_EXTRA_KEYS = {"flicker": ("video/temporal_diff",), "is": ("video/is_std",)}


class SweepRecipe:
    """`objective(params, trial) -> float` for `run_sweep`: trains the example model with `params`.

    Args:
        base: The recipe swept parameters start from (default `BASE_RECIPE`), in `TrainConfig` names.
        models: The models a trial may build (their options are accepted); default the base's model.
        metrics: The video metrics a trial may compute; default the base's.
    """

    def __init__(self, base: Mapping[str, Any] | None = None, *, models: Iterable[str] | None = None,
                 metrics: Iterable[str] | None = None) -> None:
        self.base = dict(BASE_RECIPE if base is None else base)
        self.models = tuple(models) if models is not None else (self.base.get("model", "video_generation"),)
        self.metrics = tuple(metrics) if metrics is not None else tuple(self.base.get("metrics", ()))

    @classmethod
    def for_config(cls, config: SweepConfig, base: Mapping[str, Any] | None = None) -> SweepRecipe:
        """The recipe for `config`: it accepts the options of every model and the metrics `config` may pick."""
        recipe = cls(base)
        models = _choices(config, "model")
        metric_sets = _choices(config, "metrics")
        return cls(recipe.base, models=models or recipe.models,
                   metrics=[m for chosen in metric_sets for m in chosen] if metric_sets else recipe.metrics)

    @property
    def sweep_parameters(self) -> frozenset[str]:
        """`TrainConfig` fields and aliases, and the options of the models this recipe may build."""
        from models import MODELS
        from models.training import TrainConfig

        options = {f.name for name in self.models if name in MODELS for f in dataclasses.fields(MODELS[name][0])}
        return frozenset(_train_names() | set(TrainConfig.ALIASES) | options)

    @property
    def sweep_metrics(self) -> frozenset[str]:
        """The numbers `train` returns: `val/loss`, `train/loss`, `video/<metric>`, ..."""
        video = {f"video/{m}" for m in self.metrics} | {k for m in self.metrics for k in _EXTRA_KEYS.get(m, ())}
        return _TRAIN_RESULTS | video

    def train_config(self, params: Mapping[str, Any]) -> TrainConfig:
        """`TrainConfig` of one trial: the base recipe, swept `TrainConfig` fields (or aliases), the rest as
        model options. A swept `epochs` is not capped by the base's `max_steps`."""
        from models.training import TrainConfig

        names = _train_names() | set(TrainConfig.ALIASES)
        swept = {k: v for k, v in params.items() if k in names}
        options = {k: v for k, v in params.items() if k not in names}
        canonical = {TrainConfig.ALIASES.get(k, k) for k in swept}
        recipe = {k: v for k, v in self.base.items() if k not in canonical}
        if "epochs" in canonical and "max_steps" not in canonical:
            recipe["max_steps"] = None  # the swept epoch count decides the length, not the base's step cap
        recipe["model_options"] = {**self.base.get("model_options", {}), **swept.pop("model_options", {}), **options}
        return TrainConfig.from_dict({**recipe, **swept})  # resolves aliases; refuses an alias beside its field

    def __call__(self, params: dict[str, Any], trial: TrialContext) -> float:
        """One trial: train the example model; `val/loss` (and `video/*`) at each evaluation feed hyperband."""
        from models.training import build_model_for, train

        cfg = self.train_config(params)
        results = train(build_model_for(cfg), cfg, trial.reporting_tracker(), checkpoints=False)
        if trial.metric_name not in results:
            raise ValueError(f"metric.name: expected one of this trial's results ({', '.join(sorted(results))}), "
                             f"received {trial.metric_name!r}; a learned metric without its weights file is "
                             "skipped (see the 'metrics: skipped' line above)")
        return results[trial.metric_name]


def _train_names() -> set[str]:
    from models.training import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def _choices(config: SweepConfig, name: str) -> list[Any]:
    """The values parameter `name` of `config` can take (a constant or a list of values), or []."""
    spec = config.parameters.get(name)
    if spec is None:
        return []
    return [spec.value] if spec.distribution == "constant" else list(spec.values)
