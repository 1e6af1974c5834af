"""A sweep is checked before its first trial: parameters and metric against what the objective declares, a
changed search space under an existing name, a sweep with nothing left to run; and how trials end (a failed
trial's run is failed with its error, a pruned one's is not; all trials failing is reported)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from _sweep_objectives import quadratic

from opusclip_track.store import RunStore
from opusclip_track.sweep import (
    InvalidSweepError,
    SweepConfig,
    SweepResult,
    TrialContext,
    check_declared,
    run_sweep,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
NO_WANDB = {"use_wandb": False, "system_monitor_interval_s": 0}


def grid(name: str = "g", metric: str = "val/loss", **parameters: list[Any]) -> dict[str, Any]:
    params = parameters or {"lr": [0.001, 0.01], "wd": [0.0, 0.1]}
    return {"name": name, "method": "grid", "metric": {"name": metric, "goal": "minimize"},
            "parameters": {k: {"values": v} for k, v in params.items()}}


class Declared:
    """An objective that declares what it accepts and reports, and counts its calls."""

    sweep_parameters = frozenset({"lr", "wd", "learning_rate"})
    sweep_metrics = frozenset({"val/loss", "video/psnr"})

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params: dict[str, Any], trial: TrialContext) -> float:
        self.calls += 1
        return quadratic({"lr": params.get("lr", 0.01), "wd": params.get("wd", 0.0)}, trial)


@pytest.mark.parametrize(("config", "message"), [
    (grid(learnin_rate=[0.1, 0.2]), "parameters: expected names the objective accepts (learning_rate, lr, wd), "
                                    "received unknown learnin_rate (did you mean 'learnin_rate' -> 'learning_rate'?)"),
    (grid(metric="val_loss"), "metric.name: expected a metric the objective reports (val/loss, video/psnr), "
                              "received 'val_loss' (did you mean 'val_loss' -> 'val/loss'?)"),
    ({**grid(), "metric": None}, "metric.name: expected a metric the objective reports (val/loss, video/psnr), "
                                 "received no metric"),
])
def test_an_undeclared_parameter_or_metric_is_refused_before_any_trial(
        tmp_path: Path, config: dict[str, Any], message: str) -> None:
    if config.get("metric") is None:
        config.pop("metric")
    objective = Declared()
    with pytest.raises(InvalidSweepError) as info:
        run_sweep(config, objective, root=tmp_path, track=False)
    assert message in str(info.value) and isinstance(info.value, ValueError)
    assert objective.calls == 0 and not (tmp_path / "g.db").exists()  # no study, no trial


class Checked(Declared):
    """`Declared`, also refusing any `wd` above 0.05 and a `lr` of exactly 0 (`check_sweep_value`)."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[tuple[str, Any]] = []

    def check_sweep_value(self, name: str, value: Any) -> None:
        self.checked.append((name, value))
        if name == "wd" and value > 0.05:
            raise ValueError(f"wd: expected at most 0.05, received {value}")
        if name == "lr" and value == 0:
            raise TypeError("lr: expected a positive number, received 0")


def test_a_discrete_value_the_objective_refuses_is_refused_before_any_trial(tmp_path: Path) -> None:
    objective = Checked()
    with pytest.raises(InvalidSweepError, match=r"^parameters.wd: the objective cannot run with 0.1: wd: expected at "
                                                r"most 0.05, received 0.1$"):
        run_sweep(grid(lr=[0.001, 0.01], wd=[0.0, 0.1]), objective, root=tmp_path, track=False)
    assert objective.calls == 0 and not (tmp_path / "g.db").exists()  # no study, no trial
    int_range = {**grid(), "method": "random", "run_cap": 2, "parameters": {
        "lr": {"distribution": "int_uniform", "min": 0, "max": 3}, "wd": {"value": 0.0}}}
    with pytest.raises(InvalidSweepError, match=r"parameters.lr: the objective cannot run with 0: lr: expected a"):
        run_sweep(int_range, objective, root=tmp_path, track=False)  # a TypeError too; int_uniform is discrete


def test_continuous_ranges_are_not_checked_up_front_and_large_ranges_by_their_ends(tmp_path: Path) -> None:
    objective = Checked()
    config = {**grid(), "method": "random", "run_cap": 3, "parameters": {
        "lr": {"value": 0.01}, "wd": {"distribution": "uniform", "min": 0.0, "max": 1.0}}}
    check_declared(SweepConfig.from_dict(config), objective)  # no value of wd is known before a trial samples it
    assert objective.checked == [("lr", 0.01)]
    big = {**config, "parameters": {"lr": {"distribution": "int_uniform", "min": 1, "max": 5000}, "wd": {"value": 0}}}
    objective.checked.clear()
    check_declared(SweepConfig.from_dict(big), objective)
    assert objective.checked == [("lr", 1), ("lr", 5000), ("wd", 0)]  # more than 1,000 values: the ends


def test_an_objective_that_declares_nothing_runs_any_sweep(tmp_path: Path) -> None:
    check_declared(SweepConfig.from_dict(grid(metric="anything")), quadratic)
    result = run_sweep(grid(metric="anything"), quadratic, root=tmp_path, track=False, plot=False)
    assert len(result.completed()) == 4


def test_a_changed_search_space_says_what_changed_and_fresh_starts_anew_keeping_the_old(tmp_path: Path) -> None:
    run_sweep(grid("s"), quadratic, root=tmp_path, tracking=NO_WANDB, plot=False)
    changed = grid("s", lr=[0.001, 0.05], momentum=[0.9])
    with pytest.raises(InvalidSweepError) as info:
        run_sweep(changed, quadratic, root=tmp_path, tracking=NO_WANDB)
    message = str(info.value)
    assert message.startswith("parameters: the study 's' in sqlite:///") and "was run with another sweep" in message
    assert "parameters.momentum added" in message and "parameters.wd removed" in message
    assert "parameters.lr {'values': [0.001, 0.01]} -> {'values': [0.001, 0.05]}" in message
    assert "fresh=True" in message and "--fresh" in message

    result = run_sweep(changed, quadratic, root=tmp_path, tracking=NO_WANDB, plot=False, fresh=True)
    assert len(result.completed()) == 2 and {t.params["lr"] for t in result.trials} == {0.001, 0.05}
    (archive,) = [n for n in optuna.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}") if n != "s"]
    assert archive.startswith("s-") and any(archive in note for note in result.notes)
    old = optuna.load_study(study_name=archive, storage=f"sqlite:///{tmp_path / 's.db'}")
    assert len(old.trials) == 4  # the earlier study is kept, whole
    assert (tmp_path / archive / "s-trial003").is_dir()  # ... with its runs
    fresh_run = RunStore(tmp_path / "s" / "s-trial000")  # the new trial 0 starts an empty run
    assert [v for _, _, v in fresh_run.history("val/loss")] == [result.trials[0].value]


def test_rerunning_a_finished_grid_says_already_complete_and_runs_nothing(tmp_path: Path) -> None:
    objective = Declared()
    first = run_sweep(grid(), objective, root=tmp_path, track=False)
    again = run_sweep(grid(), objective, root=tmp_path, track=False)
    assert objective.calls == 4 and not first.already_complete
    assert again.already_complete and again.ran == () and again.failure() is None
    assert again.notes[0].startswith("already complete: 4 of 4 grid points done, nothing to run")
    assert str(again).splitlines()[1].startswith("note: already complete")
    assert again.best_params == first.best_params and again.figures == first.figures  # the plots from before


def test_a_failed_trial_keeps_its_error_and_all_trials_failing_is_reported(tmp_path: Path) -> None:
    def flaky(params: dict[str, Any], trial: TrialContext) -> float:
        if params["lr"] == 0.001:
            raise RuntimeError("CUDA out of memory; db postgresql://me:hunter2@db/x")
        return 1.0

    some = run_sweep(grid("some", lr=[0.001, 0.01]), flaky, root=tmp_path, track=False, plot=False)
    (failed,) = [t for t in some.trials if t.state == "FAIL"]
    assert failed.error is not None and failed.error.startswith("RuntimeError: CUDA out of memory")
    assert "hunter2" not in failed.error  # the message is stored in the study: secrets redacted
    assert some.failure() is None  # one trial completed

    every = run_sweep(grid("every", lr=[0.001]), flaky, root=tmp_path, track=False, plot=False)
    assert every.failure() == f"trial 0: {failed.error}"


def test_a_failed_trials_run_ends_failed_and_a_pruned_trials_run_ends_normally(tmp_path: Path) -> None:
    def objective(params: dict[str, Any], trial: TrialContext) -> float:
        trial.report(1.0, 1)
        if params["mode"] == "crash":
            raise RuntimeError("diverged at step 1")
        if params["mode"] == "pruned":
            raise optuna.TrialPruned("stopped by the pruner")  # what TrialContext.report raises when pruned
        return 0.5

    result = run_sweep(grid("ends", mode=["good", "pruned", "crash"]), objective, root=tmp_path, tracking=NO_WANDB,
                       plot=False)
    trials = {t.params["mode"]: t for t in result.trials}
    assert {m: t.state for m, t in trials.items()} == {"good": "COMPLETE", "pruned": "PRUNED", "crash": "FAIL"}
    meta = {m: RunStore(tmp_path / "ends" / str(t.run_name)).meta() for m, t in trials.items()}
    assert meta["crash"]["status"] == "failed" and "diverged at step 1" in str(meta["crash"].get("error"))
    assert meta["pruned"]["status"] == "finished" and meta["good"]["status"] == "finished"


def test_failure_is_none_when_this_call_ran_nothing() -> None:
    empty = SweepResult(name="x", metric="m", goal="minimize", best_params=None, best_value=None,
                        best_number=None, trials=[], storage="")
    assert empty.failure() is None
