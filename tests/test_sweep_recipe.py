"""The example sweep recipe (models/sweep_recipe.py): the names researchers bring from W&B and seed 004
(`learning_rate`, `batch_size`, `epochs`/`max_epochs`) take effect, and what it declares is what it does."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import pytest

from models.sweep_recipe import BASE_RECIPE, SweepRecipe
from models.training import TrainConfig
from opusclip_track.store import RunStore
from opusclip_track.sweep import InvalidSweepError, SweepConfig, check_declared, run_sweep

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Two steps per epoch (16 clips of 8), evaluated every step: a trial takes a second or two on a CPU.
TINY = {**BASE_RECIPE, "train_clips": 16, "val_clips": 4, "eval_every": 1, "log_every": 1, "warmup_steps": 0,
        "sample_clips": 0, "device": "cpu"}


def seed_004_sweep(**parameters: Any) -> dict[str, Any]:
    """The sweep of seed 004 / the W&B docs, in their names."""
    return {"name": "seed004", "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
            "parameters": parameters or {"learning_rate": {"value": 0.004}, "batch_size": {"value": 8},
                                         "epochs": {"values": [1, 2]}}}


def test_seed_004_names_set_the_recipe_and_a_swept_epoch_count_is_not_capped_by_max_steps() -> None:
    recipe = SweepRecipe()
    cfg = recipe.train_config({"learning_rate": 0.003, "batch_size": 16, "epochs": 3, "width": 16})
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.max_steps) == (0.003, 16, 3, None)
    assert cfg.model_options == {"width": 16, "num_res_blocks": 1}
    assert recipe.train_config({"max_epochs": 2}).epochs == 2
    capped = recipe.train_config({"epochs": 3, "max_steps": 5})  # both swept: the cap is the user's own
    assert (capped.epochs, capped.max_steps) == (3, 5)
    assert recipe.train_config({"lr": 0.01}).max_steps == BASE_RECIPE["max_steps"]  # epochs not swept
    with pytest.raises(ValueError, match="learning_rate|lr"):
        recipe.train_config({"learning_rate": 0.003, "lr": 0.01})


def test_a_seed_004_sweep_trains_each_trial_for_its_own_epoch_count(tmp_path: Path) -> None:
    config = SweepConfig.from_dict(seed_004_sweep())
    result = run_sweep(config, SweepRecipe.for_config(config, base=TINY), root=tmp_path, plot=False,
                       tracking={"use_wandb": False, "system_monitor_interval_s": 0})
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    for trial in result.trials:
        store = RunStore(tmp_path / "seed004" / str(trial.run_name))
        steps = [step for step, _, _ in store.history("val/loss")]
        assert max(steps) == 2 * trial.params["epochs"]  # 2 steps per epoch, not BASE_RECIPE's max_steps
        assert store.meta()["config"]["train"]["lr"] == 0.004  # learning_rate reached the optimiser's recipe
        assert trial.steps == len(set(steps))  # every evaluation reported to the pruner (the last also as final)


def test_the_recipe_declares_exactly_what_train_returns(tmp_path: Path) -> None:
    config = SweepConfig.from_dict(seed_004_sweep(epochs={"value": 1}))
    returned: dict[str, Any] = {}
    recipe = SweepRecipe.for_config(config, base=TINY)

    def objective(params: dict[str, Any], trial: Any) -> float:
        from models.training import build_model_for, train

        cfg = recipe.train_config(params)
        returned.update(train(build_model_for(cfg), cfg, trial.tracker, checkpoints=False))
        return returned["val/loss"]

    run_sweep(config, objective, root=tmp_path, plot=False, tracking={"use_wandb": False,
                                                                      "system_monitor_interval_s": 0})
    assert set(returned) == recipe.sweep_metrics
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields | set(TrainConfig.ALIASES) | {"width", "num_res_blocks"} <= recipe.sweep_parameters


def test_a_sweep_over_models_accepts_each_models_options_and_nothing_else() -> None:
    both = SweepConfig.from_dict(seed_004_sweep(model={"values": ["video_generation", "transformer"]},
                                                width={"value": 8}, n_layer={"value": 2}))
    assert {"width", "n_layer"} <= SweepRecipe.for_config(both).sweep_parameters
    conv_only = SweepConfig.from_dict(seed_004_sweep(n_layer={"value": 2}))
    with pytest.raises(InvalidSweepError, match="received unknown n_layer"):
        run_sweep(conv_only, SweepRecipe.for_config(conv_only), plot=False)


def test_a_width_the_conv_model_cannot_take_is_refused_before_any_trial(tmp_path: Path) -> None:
    # `width: 4` used to start every trial and fail each one inside the model (GroupNorm needs a multiple of 8).
    config = SweepConfig.from_dict(seed_004_sweep(width={"values": [4, 8]}))
    with pytest.raises(InvalidSweepError, match=r"^parameters.width: the objective cannot run with 4: width: "
                                                r"expected a multiple of 8 \(GroupNorm groups\), received 4$"):
        run_sweep(config, SweepRecipe.for_config(config, base=TINY), root=tmp_path, plot=False)
    assert not (tmp_path / "seed004.db").exists()  # no study, no trial
    recipe = SweepRecipe.for_config(config, base=TINY)
    recipe.check_sweep_value("width", 16)
    with pytest.raises(ValueError, match=r"TrainConfig.batch_size: expected an int >= 1, received 0"):
        recipe.check_sweep_value("batch_size", 0)


def test_a_sweep_over_both_models_gives_each_trial_the_options_of_its_own_model() -> None:
    both = SweepConfig.from_dict(seed_004_sweep(model={"values": ["video_generation", "transformer"]},
                                                width={"value": 16}, n_layer={"value": 2}))
    recipe = SweepRecipe.for_config(both)
    params = {"model": "transformer", "width": 16, "n_layer": 2}
    assert recipe.train_config(params).model_options == {"n_layer": 2}  # not the conv model's width, num_res_blocks
    assert recipe.train_config({**params, "model": "video_generation"}).model_options == {"width": 16,
                                                                                           "num_res_blocks": 1}
    check_declared(both, recipe)  # width by the conv model, n_layer by the transformer
    with pytest.raises(InvalidSweepError, match=r"parameters.n_layer: the objective cannot run with 0: n_layer: "
                                                r"expected an int >= 1, received 0"):
        check_declared(SweepConfig.from_dict(seed_004_sweep(model={"values": ["video_generation", "transformer"]},
                                                            n_layer={"values": [2, 0]})), recipe)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_sweep_file_is_one_the_recipe_runs(path: Path) -> None:
    config = SweepConfig.from_yaml(path)
    check_declared(config, SweepRecipe.for_config(config))
    recipe = SweepRecipe.for_config(config)
    for name, spec in config.parameters.items():  # each swept value lands in the trial's TrainConfig
        if spec.distribution in ("constant", "categorical"):
            value = spec.value if spec.distribution == "constant" else spec.values[-1]
            cfg = recipe.train_config({name: value})
            assert value in (getattr(cfg, TrainConfig.ALIASES.get(name, name), None), cfg.model_options.get(name))
