"""`opusclip-track runs list|show|compare` and `sync` on real runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from _readers import scalars
from _wandb_reader import read_wandb_run
from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.cli import main


def make_run(runs_dir: Path, name: str, loss: float, **overrides: object) -> Path:
    options: dict[str, object] = {"experiment_name": "cli", "log_dir": str(runs_dir), "use_wandb": False,
                                  "run_name": name, "system_monitor_interval_s": 0.0}
    options.update(overrides)
    with AdvancedExperimentTracker(TrackingConfig(**options)) as tracker:  # type: ignore[arg-type]
        for step in range(5):
            tracker.log_metrics({"train/loss": loss + step, "video/psnr": 20.0 + step}, step=step)
        tracker.log_text("note", "hello", step=1)
        tracker.log_hyperparameters({"lr": 0.01})
    return tracker.run_dir


def test_list_show_and_compare(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(runs_dir, "run-a", 1.0)
    make_run(runs_dir, "run-b", 2.0)
    assert main(["runs", "--log-dir", str(runs_dir), "list"]) == 0
    listing = capsys.readouterr().out
    assert "run-a" in listing and "run-b" in listing and "finished" in listing
    assert main(["runs", "--log-dir", str(runs_dir), "show", "run-a"]) == 0
    shown = capsys.readouterr().out
    row = [line for line in shown.splitlines() if line.startswith("train/loss")][0]
    assert row.split() == ["train/loss", "4", "5", "5"]  # last step, last value, points
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "run-a", "run-b", "--keys", "train/loss"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train/loss")][0]
    assert row.split()[1:] == ["5", "6"]


def test_unknown_run_is_a_clear_error(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(runs_dir, "run-a", 1.0)
    assert main(["runs", "--log-dir", str(runs_dir), "show", "nope"]) == 1
    assert "RUN" in capsys.readouterr().err


def test_sync_replays_the_store_into_wandb_and_tensorboard(runs_dir: Path) -> None:
    run_dir = make_run(runs_dir, "run-c", 1.0)  # W&B was off while it ran
    assert main(["sync", "run-c", "--log-dir", str(runs_dir), "--to", "wandb"]) == 0
    history = read_wandb_run(run_dir)["history"]
    assert [(r["_step"], r["train/loss"]) for r in history if "train/loss" in r] == \
        [(s, 1.0 + s) for s in range(5)]
    assert main(["sync", "run-c", "--log-dir", str(runs_dir), "--to", "tensorboard"]) == 0
    replayed = scalars("tensorboard", run_dir / "replay")
    assert replayed["video/psnr"] == [(s, 20.0 + s) for s in range(5)]
