"""Sweep results beyond the table: Optuna's parallel-coordinates plot and parameter importances next to the
study, importances in the printed summary, and notes where the numbers alone mislead (too few trials for
importances, bayes still drawing TPE's random start-up points, random search repeating a tiny space)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from _sweep_objectives import quadratic

from opusclip_track.sweep import TrialContext, run_sweep, write_report

optuna.logging.set_verbosity(optuna.logging.WARNING)
PNG = b"\x89PNG\r\n\x1a\n"


def test_a_sweep_writes_parallel_coordinates_and_importances_and_prints_them(tmp_path: Path) -> None:
    config = {"name": "imp", "method": "grid", "metric": {"name": "loss"},
              "parameters": {"lr": {"values": [0.001, 0.01, 0.1]}, "wd": {"values": [0.0, 0.001]},
                             "const": {"value": 3}}}
    result = run_sweep(config, quadratic, root=tmp_path, track=False)
    assert set(result.figures) == {"optimization_history", "parallel_coordinate", "param_importances"}
    for name, path in result.figures.items():
        assert path == tmp_path / "imp" / f"{name}.png" and path.read_bytes()[:8] == PNG
    importances = result.importances
    assert importances is not None and set(importances) == {"lr", "wd"}  # a constant is not a parameter here
    assert sum(importances.values()) == pytest.approx(1.0)
    assert importances["lr"] > importances["wd"]  # the loss moves with lr by 0.008, with wd by 0.001
    line = str(result).splitlines()[-1]
    assert line.startswith("parameter importances (fANOVA, 6 completed trials): lr ")
    again = run_sweep(config, quadratic, root=tmp_path / "again", track=False)
    assert again.importances == importances  # seeded: the same trials give the same importances


def test_write_report_is_public_and_writes_the_page_of_a_sweep_run_without_one(tmp_path: Path) -> None:
    config = {"name": "rep", "method": "grid", "metric": {"name": "loss"},
              "parameters": {"lr": {"values": [0.001, 0.01]}}}
    result = run_sweep(config, quadratic, root=tmp_path, plot=False, report=False,
                       tracking={"use_wandb": False, "use_tensorboard": False, "system_monitor_interval_s": 0})
    assert result.report is None and not (tmp_path / "rep" / "report.html").exists()
    page = write_report(result, tmp_path / "rep")
    assert page == tmp_path / "rep" / "report.html" and (tmp_path / "rep" / "stats.json").is_file()
    assert "rep-trial000" in page.read_text() and "rep-trial001" in page.read_text()


@pytest.mark.parametrize(("values", "why"), [
    ({"lr": [0.01]}, "need at least 2 completed trials with different values; this sweep has 1"),
    ({"lr": [0.01, 0.02], "wd": [0.0]}, None),
])
def test_too_few_completed_trials_or_values_for_importances_are_said_not_crashed(
        tmp_path: Path, values: dict[str, list[Any]], why: str | None) -> None:
    config = {"name": "few", "method": "grid", "metric": {"name": "loss"},
              "parameters": {k: {"values": v} for k, v in values.items()}}
    result = run_sweep(config, quadratic, root=tmp_path, track=False)
    if why is not None:
        assert result.importances is None and any(why in note for note in result.notes)
        assert set(result.figures) == {"optimization_history"}  # nothing to compare across one trial
    else:  # wd took one value: importances over lr alone, and the note says wd was left out
        assert result.importances == {"lr": 1.0}
        assert "parameter importances leave out wd: one value in every completed trial" in result.notes


@pytest.mark.parametrize(("result_of", "importances", "note"), [
    (lambda params: float(params["seed"]), {"seed": 1.0},
     "parameter importances leave out lr: one value in every completed trial"),
    (lambda params: 1.0, None, "parameter importances need completed trials with different results; all 2 gave 1"),
])
def test_importances_look_at_completed_trials_only_and_say_when_they_cannot_tell(
        tmp_path: Path, result_of: Any, importances: dict[str, float] | None, note: str) -> None:
    def objective(params: dict[str, Any], trial: TrialContext) -> float:
        if params["lr"] != 0.01:
            raise RuntimeError("diverged")
        return result_of(params)

    config = {"name": "completed", "method": "grid", "metric": {"name": "loss"},
              "parameters": {"lr": {"values": [0.01, 0.1]}, "seed": {"values": [0, 1]}}}
    result = run_sweep(config, objective, root=tmp_path, track=False)
    assert len(result.completed()) == 2 and result.importances == importances and note in result.notes


def test_bayes_says_its_first_trials_are_random_and_random_says_it_repeats_a_tiny_space(tmp_path: Path) -> None:
    tiny = {"metric": {"name": "loss"}, "parameters": {"lr": {"values": [0.001, 0.01]}, "wd": {"values": [0.0]}}}
    bayes = run_sweep({**tiny, "name": "b", "method": "bayes"}, quadratic, count=5, root=tmp_path, track=False,
                      plot=False)
    random = run_sweep({**tiny, "name": "r", "method": "random"}, quadratic, count=5, root=tmp_path, track=False,
                       plot=False)
    assert [t.params for t in bayes.trials] == [t.params for t in random.trials]  # what the note explains
    assert any(n.startswith("bayes: TPE draws its first 10 trials at random, the same points as method random")
               for n in bayes.notes)
    for result in (bayes, random):
        pattern = r"(bayes|random): 5 trials drew only [12] distinct points? of this 2-point space \(repeats\); " \
                  r"method grid runs each point once"
        assert any(re.fullmatch(pattern, n) for n in result.notes), result.notes
    continuous = {**tiny, "name": "c", "method": "random", "parameters": {"lr": {"min": 0.001, "max": 0.1}}}
    notes = run_sweep(continuous, quadratic, count=3, root=tmp_path, track=False, plot=False).notes
    assert not any("distinct point" in n for n in notes)  # a continuous space does not repeat


def test_trials_rank_best_first_by_the_goal_then_pruned_then_running_then_failed() -> None:
    from opusclip_track.sweep import SweepResult, TrialRecord

    trials = [TrialRecord(0, "FAIL", {}, None), TrialRecord(1, "COMPLETE", {}, 0.3), TrialRecord(2, "PRUNED", {}, 0.1),
              TrialRecord(3, "COMPLETE", {}, 0.2), TrialRecord(4, "RUNNING", {}, None),
              TrialRecord(5, "COMPLETE", {}, 0.2), TrialRecord(6, "PRUNED", {}, 0.5)]
    result = SweepResult("s", "loss", "minimize", None, None, None, trials, "")
    assert [t.number for t in result.ranked()] == [3, 5, 1, 2, 6, 4, 0]
    maximize = SweepResult("s", "psnr", "maximize", None, None, None, trials, "")
    assert [t.number for t in maximize.ranked()] == [1, 3, 5, 6, 2, 4, 0]


def test_a_trial_that_ended_before_asking_for_its_parameters_shows_the_point_it_was_given() -> None:
    # A worker SIGKILLed right after its trial started leaves a FAIL trial without Optuna params; its record must
    # still say which grid point (or queued point) it was running, not {}.
    from opusclip_track.sweep import SweepConfig
    from opusclip_track.sweep.distributions import grid_search_space
    from opusclip_track.sweep.results import record

    config = SweepConfig.from_dict({"name": "k", "method": "grid", "metric": {"name": "loss"},
                                    "parameters": {"lr": {"values": [0.001, 0.01]}, "wd": {"values": [0.0, 0.5]}}})
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid_search_space(config), seed=0))
    for _ in range(3):  # 3 of the 4 points: the 4th would end the grid, which only optimize() may do
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    points = [record(config, t).params for t in study.get_trials()]
    every = [{"lr": lr, "wd": wd} for lr in (0.001, 0.01) for wd in (0.0, 0.5)]
    assert len(points) == 3 and all(p in every for p in points) and len({repr(p) for p in points}) == 3
    queue = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))  # a resumed grid queues its points
    queue.enqueue_trial({"lr": 0.01, "wd": 0.5})
    queue.tell(queue.ask(), state=optuna.trial.TrialState.FAIL)
    assert record(config, queue.get_trials()[0]).params == {"lr": 0.01, "wd": 0.5}
