"""The store's reader API (what `runs`, `sync` and `report` use): summaries, arrays, logging-order batches, and
finding runs, nested sweep trials included. Real SQLite stores written through `RunStore.write`, as the
tracker's worker writes them."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.store import KeySummary, find_run, list_runs


def written(run_dir: Path, scalars: list[tuple[str, int, float, float]], batch: int = 3) -> RunStore:
    """A closed store holding `scalars`, written in batches of `batch` rows; opened for reading."""
    with RunStore(run_dir, create=True) as store:
        for start in range(0, len(scalars), batch):
            store.write(scalars[start:start + batch])
    return RunStore(run_dir)


def test_summary_gives_each_keys_count_ends_and_finite_extremes(tmp_path: Path) -> None:
    store = written(tmp_path / "run", [
        ("loss", 0, 10.0, 3.0), ("lr", 0, 10.0, 0.1), ("loss", 1, 11.0, math.inf), ("loss", 2, 12.0, -1.5),
        ("diverged", 5, 12.0, math.nan), ("loss", 3, 13.0, math.nan), ("diverged", 6, 14.0, -math.inf)])
    summary = store.summary()
    assert list(summary) == ["diverged", "loss", "lr"]
    loss = summary["loss"]
    assert (loss.count, loss.first_step, loss.last_step, loss.last_wall_time) == (4, 0, 3, 13.0)
    assert math.isnan(loss.last_value), "the last value is the last logged, NaN included"
    assert (loss.min, loss.max, loss.mean) == (-1.5, 3.0, 0.75), "extremes and mean over finite values only"
    assert summary["lr"] == KeySummary(1, 0, 0, 0.1, 0.1, 0.1, 0.1, 10.0)
    diverged = summary["diverged"]
    assert diverged.count == 2 and diverged.last_value == -math.inf
    assert math.isnan(diverged.min) and math.isnan(diverged.max) and math.isnan(diverged.mean)
    assert store.num_scalars() == 7 and store.keys() == ["diverged", "loss", "lr"]


def test_history_arrays_are_typed_in_logging_order_and_downsampled_without_losing_spikes(tmp_path: Path) -> None:
    n = 20_000
    values = np.sin(np.arange(n) / 500.0)
    values[12_345] = 40.0  # one spike, which striding to 400 points would miss
    values[7_000] = math.nan  # a NaN, which a chart marks
    rows = [("x", s, 1000.0 + s, float(v)) for s, v in enumerate(values)]
    rows.insert(100, ("y", 0, 0.0, 1.0))
    store = written(tmp_path / "run", rows, batch=1000)
    steps, walls, got = store.history_arrays("x")
    assert (steps.dtype, walls.dtype, got.dtype) == (np.int64, np.float64, np.float64)
    assert steps.tolist() == list(range(n)) and np.array_equal(got, values, equal_nan=True)
    assert walls[5] == 1005.0

    steps, walls, got = store.history_arrays("x", max_points=400)
    assert 200 < steps.size <= 400 and np.all(np.diff(steps) > 0), "in logging order, each point once"
    top = int(np.nanargmax(got))
    assert (got[top], steps[top], walls[top]) == (40.0, 12_345, 1000.0 + 12_345)
    assert 7_000 in steps[np.isnan(got)].tolist(), "where the run produced NaN stays visible"
    assert (steps[0], steps[-1]) == (0, n - 1)
    assert np.nanmax(values[::n // 400]) < 2, "what plain striding would have drawn"

    short = store.history_arrays("y", max_points=400)
    assert [a.tolist() for a in short] == [[0], [0.0], [1.0]]
    assert all(a.size == 0 for a in store.history_arrays("never-logged"))
    with pytest.raises(ValueError, match=r"max_points: expected an int >= 4 .*received 2"):
        store.history_arrays("x", max_points=2)


def test_scalar_batches_replay_every_scalar_grouped_as_logged(runs_dir: Path) -> None:
    cfg = TrackingConfig(experiment_name="batches", log_dir=str(runs_dir), use_wandb=False, use_tensorboard=False,
                         system_monitor_interval_s=0)
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_metrics({"loss": 1.0, "acc": 0.5}, step=0)
        tracker.log_metrics({"loss": math.nan}, step=1)
        tracker.log_metrics({"val/loss": 2.0}, step=1)  # same step, another call: its own group
        tracker.log_metrics({"loss": 0.5, "acc": 0.75}, step=2)
    batches = list(RunStore(tracker.run_dir).scalar_batches())
    assert [(step, sorted(values)) for step, _, values in batches] == [
        (0, ["acc", "loss"]), (1, ["loss"]), (1, ["val/loss"]), (2, ["acc", "loss"])]
    assert math.isnan(batches[1][2]["loss"]) and batches[3][2] == {"loss": 0.5, "acc": 0.75}
    assert all(isinstance(wall, float) and wall > time.time() - 600 for _, wall, _ in batches)
    assert sum(len(v) for _, _, v in batches) == RunStore(tracker.run_dir).num_scalars()


def _run(path: Path, age_s: float) -> Path:
    RunStore(path, create=True).close()
    stamp = time.time() - age_s
    os.utime(path / "run.db", (stamp, stamp))
    return path


def test_list_runs_finds_nested_sweep_trials_and_find_run_resolves_names(tmp_path: Path) -> None:
    log_dir = tmp_path / "runs"
    old = _run(log_dir / "baseline-2024", 300)
    trial = _run(log_dir / "sweeps" / "lr-search" / "trial-000", 200)
    other = _run(log_dir / "sweeps" / "wd-search" / "trial-000", 100)
    newest = _run(log_dir / "unet-seed0", 0)
    (newest / "media" / "deep").mkdir(parents=True)
    assert list_runs(log_dir) == [newest, other, trial, old]
    assert list_runs(tmp_path / "missing") == []

    assert find_run(log_dir, "unet-seed0") == newest
    assert find_run(log_dir, "base") == old, "a unique prefix"
    assert find_run(log_dir, "sweeps/lr-search/trial-000") == trial, "the path under the log dir"
    assert find_run(log_dir, "sweeps/wd") == other
    assert find_run(log_dir, str(newest)) == newest and find_run(tmp_path, newest / "run.db") == newest
    with pytest.raises(ValueError, match=r"'trial-000' matches 2 runs .*sweeps/lr-search/trial-000, "
                                         r"sweeps/wd-search/trial-000"):
        find_run(log_dir, "trial-000")
    with pytest.raises(ValueError, match="'sweeps/' matches 2 runs"):
        find_run(log_dir, "sweeps/")
    with pytest.raises(FileNotFoundError, match=r"received 'vit'.*runs here: baseline-2024, sweeps/lr-search"):
        find_run(log_dir, "vit")


def test_a_diverged_run_downsamples_to_max_points_with_its_nans_marked_across_the_range(tmp_path: Path) -> None:
    n = 10_000
    values = np.linspace(1.0, 0.1, n)
    values[n // 2:] = math.nan  # diverged half way: 5,000 NaNs, more than the budget
    values[1_234] = 9.0
    store = written(tmp_path / "run", [("loss", s, float(s), float(v)) for s, v in enumerate(values)], batch=2_000)
    steps, _, got = store.history_arrays("loss", max_points=100)
    assert steps.size <= 100 and np.all(np.diff(steps) > 0)
    assert np.nanmax(got) == 9.0 and steps[np.nanargmax(got)] == 1_234
    marks = steps[np.isnan(got)]
    assert 20 <= marks.size <= 32 and marks[0] == n // 2 and marks[-1] > n - n // 20, "NaN marks span the NaN range"
