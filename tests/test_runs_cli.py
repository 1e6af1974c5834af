"""`opusclip-track runs list|show|compare` and `sync` on real runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from _readers import scalars
from _wandb_reader import read_wandb_run
from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.backends import REGISTRY
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


@pytest.mark.parametrize("damage", ["zero-byte", "corrupt"])
def test_a_bad_store_is_listed_as_unreadable_and_the_good_runs_still_show(
        runs_dir: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    """One corrupt or empty run.db made `runs list` print a traceback and list nothing."""
    make_run(runs_dir, "run-good", 1.0)
    bad = runs_dir / "run-bad"
    bad.mkdir()
    (bad / "run.db").write_bytes(b"" if damage == "zero-byte" else b"this is not an SQLite file\n" * 64)
    assert main(["runs", "--log-dir", str(runs_dir), "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    good = [line for line in listing if line.startswith("run-good")]
    marked = [line for line in listing if line.startswith("run-bad")]
    assert len(good) == 1 and "finished" in good[0] and len(marked) == 1
    reason = "no such table: meta" if damage == "zero-byte" else "file is not a database"
    assert "UNREADABLE" in marked[0] and reason in marked[0]

    assert main(["runs", "--log-dir", str(runs_dir), "show", "run-bad"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert f"{bad / 'run.db'}: not a readable run store ({reason})" in captured.err
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "run-good", "run-bad"]) == 1
    assert main(["sync", "run-bad", "--log-dir", str(runs_dir), "--to", "tensorboard"]) == 1


def test_the_real_command_lists_a_corrupt_run_without_a_traceback(runs_dir: Path) -> None:
    make_run(runs_dir, "run-good", 1.0)
    (runs_dir / "run-bad").mkdir()
    (runs_dir / "run-bad" / "run.db").write_bytes(os.urandom(4096))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    listed = subprocess.run([sys.executable, "-m", "opusclip_track.cli", "runs", "--log-dir", str(runs_dir), "list"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "run-good" in listed.stdout and "UNREADABLE" in listed.stdout


def test_sync_offers_every_registered_backend(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new backend (mlflow) is one registry entry: `sync --to` takes its choices from the registry."""
    from mlflow import MlflowClient

    run_dir = make_run(runs_dir, "run-m", 1.0)
    assert main(["sync", "run-m", "--log-dir", str(runs_dir), "--to", "mlflow"]) == 0
    client = MlflowClient(f"sqlite:///{(run_dir / 'mlflow' / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 1.0 + s) for s in range(5)]
    assert main(["sync", "run-m", "--log-dir", str(runs_dir), "--to", "nope"]) == 2
    assert ", ".join(repr(name) for name in sorted(REGISTRY)) in capsys.readouterr().err
