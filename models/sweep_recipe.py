"""The example model's sweep objective: `models.training.train` on a tiny CPU recipe, swept parameters on top.

Parameters named like `TrainConfig` fields or their aliases (`lr` or `learning_rate`, `epochs` or `max_epochs`,
`batch_size`, `max_steps`, `weight_decay`, ...) set those; any other name is an option of the model (`width`,
`num_res_blocks`, `n_layer`, ...), given to the trial's model when it has that option (a sweep over both models
may set options of each). Every swept value takes effect: sweeping `epochs` trains that many epochs, so the base
recipe's `max_steps` no longer caps it (sweep `max_steps` as well to cap it).

The objective declares what it accepts (`sweep_parameters`, `check_sweep_value`) and what it returns
(`sweep_metrics`), so `run_sweep` refuses a misspelled parameter or metric, or a value no trial could start with
(`width: 4`: the conv model's GroupNorm needs a multiple of 8), before the first trial.

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
        from models import MODELS, model_options

        options = {option for name in self.models if name in MODELS for option in model_options(name)}
        return frozenset(_train_names() | options)

    @property
    def sweep_metrics(self) -> frozenset[str]:
        """The numbers `train` returns: `val/loss`, `train/loss`, `video/<metric>`, ..."""
        video = {f"video/{m}" for m in self.metrics} | {k for m in self.metrics for k in _EXTRA_KEYS.get(m, ())}
        return _TRAIN_RESULTS | video

    def train_config(self, params: Mapping[str, Any]) -> TrainConfig:
        """`TrainConfig` of one trial: the base recipe, swept `TrainConfig` fields (or aliases), the rest as
        options of the trial's model (those it has, when this recipe may build several models). A swept `epochs`
        is not capped by the base's `max_steps`."""
        from models import model_options
        from models.training import TrainConfig

        names = _train_names()
        swept = {k: v for k, v in params.items() if k in names}
        options = {k: v for k, v in params.items() if k not in names}
        canonical = {TrainConfig.ALIASES.get(k, k) for k in swept}
        recipe = {k: v for k, v in self.base.items() if k not in canonical}
        if "epochs" in canonical and "max_steps" not in canonical:
            recipe["max_steps"] = None  # the swept epoch count decides the length, not the base's step cap
        merged = {**self.base.get("model_options", {}), **swept.pop("model_options", {}), **options}
        model = swept.get("model", recipe.get("model", "video_generation"))
        if len(self.models) > 1 and model in self.models:  # the other models' options are not this trial's
            merged = {k: v for k, v in merged.items() if k in model_options(model)}
        recipe["model_options"] = merged
        return TrainConfig.from_dict({**recipe, **swept})  # resolves aliases; refuses an alias beside its field

    def check_sweep_value(self, name: str, value: Any) -> None:
        """Raise `ValueError` (or `TypeError`) naming the setting when no trial given `name: value` on top of the
        base recipe could start: the recipe (`TrainConfig`) or the model's config refuses it, e.g. `width: 4`
        (the conv model's GroupNorm needs a multiple of 8). A model option is checked by each of this recipe's
        models that has it, a recipe setting by each model. Nothing is built or trained."""
        from models import model_options
        from models.training import model_config_for

        if name == "model":
            model_config_for(self.train_config({name: value}))
            return
        for model in self.models:
            if name in _train_names() or name in model_options(model):
                model_config_for(self.train_config({"model": model, name: value}))

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
    """The names that set the recipe: `TrainConfig` fields and their aliases."""
    from models.training import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)} | set(TrainConfig.ALIASES)


def _choices(config: SweepConfig, name: str) -> list[Any]:
    """The values parameter `name` of `config` can take (a constant or a list of values), or []."""
    spec = config.parameters.get(name)
    if spec is None:
        return []
    return [spec.value] if spec.distribution == "constant" else list(spec.values)
