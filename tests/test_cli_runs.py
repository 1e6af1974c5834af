"""`opusclip-track runs list|show|compare` on real runs (real stores written by the tracker)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from _runs import make_run
from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.backends import REGISTRY, Backend
from opusclip_track.cli import main
from opusclip_track.records import Hyperparameters, RunStatus, Scalars
from opusclip_track.report.data import load_run


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


# ---- nested runs, prefixes ------------------------------------------------------------------------------------
def test_list_finds_nested_runs_and_a_unique_prefix_names_a_run(
        runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Sweep trials live in runs/sweeps/<name>/<trial>/: `runs list` showed none of them, and every command
    needed a run's full generated name."""
    make_run(runs_dir, "quick-start-eager-delta-20261122", 1.0)
    make_run(runs_dir / "sweeps" / "lr", "trial-000", 2.0)
    make_run(runs_dir / "sweeps" / "lr", "trial-001", 3.0)
    assert main(["runs", "--log-dir", str(runs_dir), "list"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]}
    assert names == {"quick-start-eager-delta-20261122", "sweeps/lr/trial-000", "sweeps/lr/trial-001"}

    assert main(["runs", "--log-dir", str(runs_dir), "show", "quick-start"]) == 0  # a unique prefix
    assert "run quick-start-eager-delta-20261122" in capsys.readouterr().out
    assert main(["runs", "--log-dir", str(runs_dir), "show", "sweeps/lr/trial-001"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train/loss")][0]
    assert row.split() == ["train/loss", "4", "7", "5"]
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "trial-000", "trial-001", "--keys", "train/loss"]) == 0
    assert capsys.readouterr().out.splitlines()[3].split() == ["train/loss", "6", "7"]

    assert main(["runs", "--log-dir", str(runs_dir), "show", "sweeps/lr/trial"]) == 1  # ambiguous
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweeps/lr/trial-000" in err and "sweeps/lr/trial-001" in err


# ---- compare: globs, config diff -------------------------------------------------------------------------------
def test_compare_expands_key_globs_and_shows_only_the_config_that_differs(
        runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(runs_dir, "run-a", 1.0, learning_rate=0.01, tags=["x"])
    make_run(runs_dir, "run-b", 2.0, learning_rate=0.02, tags=["x"], batch_size=8)
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "run-a", "run-b", "--keys", "video/*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out if line.startswith("video/")] == [["video/psnr", "24", "24"]]
    assert not any(line.startswith("train/loss") for line in out)

    diff = out[out.index("config diff (2 keys differ)") + 3:]
    assert [line.split() for line in diff] == [["batch_size", "(unset)", "8"], ["learning_rate", "0.01", "0.02"]]

    assert main(["runs", "--log-dir", str(runs_dir), "compare", "run-a", "run-b", "--keys", "audio/*"]) == 1
    err = capsys.readouterr().err
    assert "--keys" in err and "'audio/*'" in err and "video/psnr" in err  # names what it could have matched


# ---- export ------------------------------------------------------------------------------------------------------
def test_show_and_compare_export_json_and_csv(runs_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    make_run(runs_dir, "run-a", 1.0, learning_rate=0.01)
    make_run(runs_dir, "run-b", 2.0, learning_rate=0.02)
    assert main(["runs", "--log-dir", str(runs_dir), "show", "run-a", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"] == "run-a" and shown["status"] == "finished" and shown["health_problems"] == []
    assert shown["scalars"]["train/loss"] | {"last_wall_time": None} == {
        "count": 5, "first_step": 0, "last_step": 4, "last_value": 5.0, "min": 1.0, "max": 5.0, "mean": 3.0,
        "last_wall_time": None}
    assert shown["config"]["learning_rate"] == 0.01

    out = tmp_path / "exports" / "a.csv"
    assert main(["runs", "--log-dir", str(runs_dir), "show", "run-a", "--csv", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [(r["key"], float(r["last_value"]), int(r["count"])) for r in rows] == [("train/loss", 5.0, 5),
                                                                                   ("video/psnr", 24.0, 5)]

    assert main(["runs", "--log-dir", str(runs_dir), "compare", "run-a", "run-b", "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in compared["runs"]] == ["run-a", "run-b"]
    assert {run: s["last_value"] for run, s in compared["scalars"]["train/loss"].items()} == {"run-a": 5.0,
                                                                                            "run-b": 6.0}
    assert compared["config_diff"] == {"learning_rate": {"run-a": 0.01, "run-b": 0.02}}
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "run-a", "run-b", "--csv", "--keys", "train/*"]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [["key", "run-a", "run-b"],
                                                                      ["train/loss", "5.0", "6.0"]]
    assert main(["runs", "--log-dir", str(runs_dir), "show", "run-a", "--out", str(out)]) == 1  # which format?
    assert "--out" in capsys.readouterr().err


def _recipe_run(runs_dir: Path, name: str, lr: float, model: str, width: int) -> None:
    """A run as the training recipe writes one: its settings in the config's `train` entry and, the same, in its
    hyperparameters' `train` entry, beside other hyperparameters."""
    config = TrackingConfig(experiment_name="cli", log_dir=str(runs_dir), use_wandb=False, run_name=name,
                            system_monitor_interval_s=0.0)
    with AdvancedExperimentTracker(config) as tracker:
        tracker.update_config({"train": {"lr": lr, "model": model, "steps": 10}})
        tracker.log_hyperparameters({"train": {"lr": lr, "model": model, "steps": 10}, "width": width})
        tracker.log_metrics({"val/loss": lr * 10}, step=0)


def test_compare_and_the_report_show_each_setting_once(runs_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`train.lr` was also shown as `hparams.train.lr`: the recipe's hyperparameters are its `train` entry."""
    import re

    from opusclip_track.report import build_report

    _recipe_run(runs_dir, "unet", 0.01, "unet", 8)
    _recipe_run(runs_dir, "vit", 0.02, "vit", 8)
    _recipe_run(runs_dir, "vit-wide", 0.02, "vit", 16)
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "unet", "vit", "vit-wide", "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)["config_diff"]
    assert diff == {"hparams.width": {"unet": 8, "vit": 8, "vit-wide": 16},
                    "train.lr": {"unet": 0.01, "vit": 0.02, "vit-wide": 0.02},
                    "train.model": {"unet": "unet", "vit": "vit", "vit-wide": "vit"}}
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "unet", "vit"]) == 0
    table = capsys.readouterr().out.split("config diff (2 keys differ)\n", 1)[1].splitlines()
    assert [line.split()[0] for line in table[2:]] == ["train.lr", "train.model"]
    stats = tmp_path / "stats.json"
    build_report(["unet", "vit", "vit-wide"], tmp_path / "r.html", log_dir=runs_dir, json_path=stats)
    page = (tmp_path / "r.html").read_text()
    shown = re.findall(r'<tr data-key="([^"]+)">', page.split('<section id="config"', 1)[1].split("</section>")[0])
    assert shown == list(diff)
    assert json.loads(stats.read_text())["group_by"] == "train.model", "what the recipe's runs hold"


def test_json_export_is_strict_json_with_nan_and_inf_as_strings(
        runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AdvancedExperimentTracker(TrackingConfig(experiment_name="cli", log_dir=str(runs_dir), use_wandb=False,
                                                  run_name="diverged", system_monitor_interval_s=0.0)) as tracker:
        tracker.log_metrics({"train/loss": 1.0}, step=0)
        tracker.log_metrics({"train/loss": float("inf")}, step=1)
        tracker.log_metrics({"train/loss": float("nan")}, step=2)
    assert main(["runs", "--log-dir", str(runs_dir), "show", "diverged", "--json"]) == 0
    text = capsys.readouterr().out
    loss = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))["scalars"]["train/loss"]
    assert (loss["last_value"], loss["min"], loss["max"], loss["count"]) == ("nan", 1.0, 1.0, 3)


# ---- status, error, health -----------------------------------------------------------------------------------------
class RefusesScalars(Backend):
    """A backend that never takes a scalar (a service that rejects them): the run's health records it."""

    name = "refuses_scalars"
    made: ClassVar[list[RefusesScalars]] = []

    def start(self) -> None:
        pass

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        raise ConnectionError("scalars rejected")

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        pass

    def close(self, status: RunStatus = "finished") -> None:
        pass


def test_show_says_a_run_failed_with_its_error_and_its_health_problems(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(REGISTRY, RefusesScalars.name, f"{__name__}:RefusesScalars")
    config = TrackingConfig(experiment_name="cli", log_dir=str(runs_dir), use_wandb=False, run_name="broken",
                            system_monitor_interval_s=0.0, backends=[RefusesScalars.name])
    with pytest.raises(RuntimeError, match="diverged"), AdvancedExperimentTracker(config) as tracker:
        tracker.log_metrics({"train/loss": 1.0}, step=0)
        raise RuntimeError("loss diverged at step 0")
    assert main(["runs", "--log-dir", str(runs_dir), "show", "broken"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "status failed" in lines[1]
    assert lines[2] == "error: RuntimeError: loss diverged at step 0"
    assert lines[3].startswith("health: ") and "backend_gave_up={'refuses_scalars': 1}" in lines[3]
    assert main(["runs", "--log-dir", str(runs_dir), "show", "broken", "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["health_problems"]
    assert problems == load_run(runs_dir / "broken", []).health_problems, "the report names the same problems"
    assert f"with problems: {', '.join(problems)} (records are missing" in caplog.text, "as the run's own warning"
    make_run(runs_dir, "healthy", 1.0)
    assert main(["runs", "--log-dir", str(runs_dir), "show", "healthy"]) == 0
    assert "health: ok" in capsys.readouterr().out.splitlines()


def test_show_and_compare_read_summaries_not_histories(runs_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`show` read every key's whole history to print its last value (4-7 s on a big run): they read
    `RunStore.summary()`, whose cost does not grow with the number of points."""
    from opusclip_track.store import RunStore

    make_run(runs_dir, "run-a", 1.0)
    make_run(runs_dir, "run-b", 2.0)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a whole history was read")

    for method in ("history", "last", "history_arrays", "scalar_batches"):
        monkeypatch.setattr(RunStore, method, refuse, raising=False)
    assert main(["runs", "--log-dir", str(runs_dir), "show", "run-a"]) == 0
    assert main(["runs", "--log-dir", str(runs_dir), "compare", "run-a", "run-b"]) == 0
    assert main(["runs", "--log-dir", str(runs_dir), "list"]) == 0
    assert "train/loss" in capsys.readouterr().out


def test_numbers_are_formatted_once_for_every_table() -> None:
    """`runs show` and the sweep table each had their own `_fmt`; one `format_number` now."""
    from opusclip_track._text import format_number
    from opusclip_track.sweep import results

    assert [format_number(v) for v in (0.0369512345, 1e-7, 3, None, float("nan"))] == [
        "0.0369512", "1e-07", "3", "-", "nan"]
    assert format_number(None, missing="(unset)") == "(unset)"
    assert not hasattr(results, "_fmt")
