"""The local run store: real SQLite, written by the tracker, read back with the reader API."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig, list_runs
from opusclip_track.store import RunLockedError


def test_reader_api_lists_keys_histories_config_and_runs(runs_dir: Path) -> None:
    cfg = TrackingConfig(experiment_name="store", log_dir=str(runs_dir), use_wandb=False, tags=["x"])
    with AdvancedExperimentTracker(cfg) as tracker:
        for step in range(10):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
        tracker.log_text("prompt", "a cat surfing", step=3)
        # the store is readable while the run is still open
        tracker.flush()
        live = RunStore(tracker.run_dir)
        assert live.num_scalars() == 20 and live.meta()["status"] == "running"
    store = RunStore(tracker.run_dir)
    assert store.keys() == ["lr", "train/loss"]
    assert [s for s, _, _ in store.history("train/loss")] == list(range(10))
    assert store.last("train/loss") == (9, pytest.approx(0.1))
    assert store.config()["tags"] == ["x"] and store.meta()["status"] == "finished"
    assert store.events("text")[0]["data"] == {"text": "a cat surfing"}
    assert store.max_step() == 9
    assert list_runs(runs_dir) == [tracker.run_dir]


def test_store_is_plain_sqlite_in_wal_mode_with_a_summary_row_per_key(runs_dir: Path) -> None:
    with AdvancedExperimentTracker(TrackingConfig(experiment_name="s", log_dir=str(runs_dir),
                                                  use_wandb=False)) as tracker:
        tracker.log_metrics({"a": 1.5}, step=4)
    conn = sqlite3.connect(tracker.run_dir / "run.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT k.name, s.n, s.last_step, s.last_value FROM scalar_summary s "
                        "JOIN keys k ON k.id = s.key_id").fetchall()
    assert rows == [("a", 1, 4, 1.5)]
    assert conn.execute("SELECT COUNT(*) FROM scalar_tail").fetchone() == (0,), "compacted at close"
    assert conn.execute("SELECT COUNT(*) FROM scalar_chunks").fetchone() == (1,)


def test_opening_a_missing_store_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run.db"):
        RunStore(tmp_path / "nope")


def test_a_failed_write_leaves_nothing_behind_and_the_next_one_lands(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", create=True)
    with pytest.raises(OverflowError):  # a step SQLite cannot hold, after a key never seen before
        store.write([("new/key", 1, 0.0, 1.0), ("new/key", 2**63, 0.0, 2.0)])
    with pytest.raises(ValueError, match="wall_time"):
        store.write([("new/key", 2, 0.0, 2.0), ("new/key", 2, math.nan, 2.0)])
    store.write([("new/key", 3, 0.0, 3.0)])  # the key's row was rolled back with the failed write
    store.close()
    assert RunStore(tmp_path / "run").history("new/key") == [(3, 0.0, 3.0)]


def test_one_writer_per_run_and_a_removed_store_is_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", create=True)
    with pytest.raises(RunLockedError, match=r"run 'run' is already open for writing by process \d+ \(this process\)"):
        RunStore(tmp_path / "run", create=True)
    RunStore(tmp_path / "run").meta()  # readers are never locked out
    (tmp_path / "run" / "run.db").rename(tmp_path / "elsewhere.db")
    with pytest.raises(FileNotFoundError, match="removed or replaced"):
        store.write([("a", 0, 0.0, 1.0)])
    store.close()
    RunStore(tmp_path / "run", create=True).close()  # the lock went with close()
