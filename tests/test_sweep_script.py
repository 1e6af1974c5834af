"""scripts/sweep.py as a user runs it (a real subprocess): a sweep written in W&B's terms that cannot run is one
clear line and exit 2 before any trial; every trial failing is exit 1 with the first failure; a finished grid
says so at once; the W&B engine without a key is one line, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from _sweep_objectives import quadratic

from opusclip_track.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]


def sweep_script(tmp_path: Path, config: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), "--config", str(path), "--root",
                           str(tmp_path / "sweeps"), *args], capture_output=True, text=True, timeout=300)


def seed_004(name: str, metric: str = "val/loss", **parameters: object) -> dict[str, object]:
    """Seed 004's sweep, small: W&B's names for the learning rate, batch size and epochs."""
    return {"name": name, "method": "grid", "metric": {"name": metric, "goal": "minimize"},
            "parameters": {"learning_rate": {"values": [0.001, 0.01]}, "batch_size": {"value": 8},
                           "epochs": {"value": 1}, **parameters}}


def trials_of(tmp_path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    db = tmp_path / "sweeps" / f"{name}.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials if db.exists() else []


def test_a_misspelled_parameter_is_one_line_listing_the_valid_names_exit_2_no_trial(tmp_path: Path) -> None:
    out = sweep_script(tmp_path, seed_004("typo", learnin_rate={"value": 0.1}))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("sweep: parameters: expected names the objective accepts (amp, background, batch_size,")
    assert "learning_rate" in line and "max_epochs" in line and "width" in line  # fields, aliases, model options
    assert line.endswith("received unknown learnin_rate (did you mean 'learnin_rate' -> 'learning_rate'?)")
    assert trials_of(tmp_path, "typo") == []


def test_a_metric_the_recipe_never_reports_is_refused_before_training(tmp_path: Path) -> None:
    out = sweep_script(tmp_path, seed_004("valloss", metric="val_loss"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "metric.name: expected a metric the objective reports (best_step, steps, train/loss, train_time_s, " \
           "val/best_loss, val/loss, video/psnr), received 'val_loss' (did you mean 'val_loss' -> 'val/loss'?)" \
           in out.stderr
    assert trials_of(tmp_path, "valloss") == []


def test_every_trial_failing_exits_1_with_the_first_failure(tmp_path: Path) -> None:
    out = sweep_script(tmp_path, seed_004("toobig", batch_size={"value": 1000}))  # the recipe has 128 clips
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "sweep 'toobig': every trial of this run failed; the first, trial 0: ValueError: train_data: expected at "
        "least batch_size=1000 clips, received 128")
    assert [t.state.name for t in trials_of(tmp_path, "toobig")] == ["FAIL", "FAIL"]


def test_a_finished_grid_says_already_complete_and_runs_nothing(tmp_path: Path) -> None:
    config = seed_004("done")
    run_sweep(config, quadratic_of_learning_rate, root=tmp_path / "sweeps", track=False, plot=False)
    out = sweep_script(tmp_path, config)
    assert out.returncode == 0, out.stderr
    assert "note: already complete: 2 of 2 grid points done, nothing to run" in out.stdout
    assert len(trials_of(tmp_path, "done")) == 2 and "trial/s" not in out.stderr  # no trial, no progress bar


def test_saying_a_finished_grid_is_already_complete_imports_no_torch(tmp_path: Path) -> None:
    # It took ~6 s because `import models.sweep_recipe` ran models/__init__, which imported both models (torch).
    config = seed_004("quick")
    run_sweep(config, quadratic_of_learning_rate, root=tmp_path / "sweeps", track=False, plot=False)
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [str(REPO / "scripts" / "sweep.py"), "--config", str(path), "--root", str(tmp_path / "sweeps")]
    code = (f"import runpy, sys\nsys.argv = {argv!r}\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as done:\n    print('exit', done.code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "note: already complete: 2 of 2 grid points done" in out.stdout, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "exit 0 False"


def test_the_wandb_engine_without_an_api_key_is_one_line_exit_1(tmp_path: Path) -> None:
    out = sweep_script(tmp_path, seed_004("wb"), "--engine", "wandb")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == (
        "sweep: engine 'wandb': expected a W&B API key (WANDB_API_KEY or `wandb login`), found none; log in, or use "
        "the local engine (run_sweep, --engine optuna), which needs no account")


def quadratic_of_learning_rate(params: dict[str, object], trial: object) -> float:
    return quadratic({"lr": params["learning_rate"]}, trial)
