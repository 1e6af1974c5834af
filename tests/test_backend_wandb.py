"""The W&B backend against a real offline run, read back from its `.wandb` file (`_wandb_reader`)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from _wandb_reader import read_wandb_run
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.backends.wandb import STEP_KEY, WandbBackend
from opusclip_track.records import Histogram

REPO = Path(__file__).resolve().parents[1]


def _config(runs_dir: Path, **overrides: object) -> TrackingConfig:
    options: dict[str, object] = {"experiment_name": "wb", "log_dir": str(runs_dir), "use_tensorboard": False,
                                  "use_wandb": True, "system_monitor_interval_s": 0}
    options.update(overrides)
    return TrackingConfig(**options)  # type: ignore[arg-type]


def _series(rows: list[dict[str, object]], key: str) -> list[tuple[int, object]]:
    """`(true step, value)` of every history row holding `key`, in the order W&B recorded them."""
    return [(int(row[STEP_KEY]), row[key]) for row in rows if key in row]  # type: ignore[call-overload]


def test_every_record_keeps_its_true_step_in_wandb_history(runs_dir: Path) -> None:
    # A loop that logs scalars every step, two system samples on some steps, a clip every 20 steps (the
    # worker delivers clips after the scalars logged beside them), text, histograms and a table.
    with AdvancedExperimentTracker(_config(runs_dir)) as tracker:
        for step in range(200):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
            if step % 10 == 0:
                tracker.log_metrics({"sys/cpu_percent": float(step)}, step=step)
                tracker.log_metrics({"sys/cpu_percent": step + 0.5}, step=step)
            if step % 20 == 0:
                tracker.log_video(torch.rand(4, 3, 16, 16), "samples/clip", step=step)
            if step % 50 == 0:
                tracker.log_text("notes", f"at {step}", step=step)
                tracker.log_histogram("weights", torch.randn(100), step=step)
        tracker.log_table("results", ["model", "psnr"], [["conv", 14.9]], step=199)
    run = read_wandb_run(tracker.run_dir)
    rows = run["history"]
    assert all(isinstance(row.get(STEP_KEY), int) for row in rows), "every row carries its true step"
    assert [row["_step"] for row in rows] == list(range(len(rows)))  # W&B only numbers the rows

    clips = _series(rows, "samples/clip")
    assert [step for step, _ in clips] == list(range(0, 200, 20))
    referenced = {Path(clip["path"]).name for _, clip in clips}  # type: ignore[index]
    assert referenced == {p.name for p in run["files"] if p.suffix == ".mp4"} and len(referenced) == 10

    store = RunStore(tracker.run_dir)
    for key in ("train/loss", "sys/cpu_percent"):
        shown, stored = sorted(_series(rows, key)), sorted((s, v) for s, _, v in store.history(key))
        assert [s for s, _ in shown] == [s for s, _ in stored], key
        np.testing.assert_allclose([v for _, v in shown], [v for _, v in stored], err_msg=key)
    assert len(_series(rows, "sys/cpu_percent")) == 40  # both samples of each step
    assert [step for step, _ in _series(rows, "notes")] == [0, 50, 100, 150]
    assert [step for step, value in _series(rows, "weights")
            if value["_type"] == "histogram"] == [0, 50, 100, 150]  # type: ignore[index]
    assert [step for step, _ in _series(rows, "results")] == [199]

    # Charts use the true step as x-axis, in the offline run that `wandb sync` uploads.
    assert any(m.glob_name == "*" and m.step_metric == STEP_KEY for m in run["metrics"])
    assert any(m.name == STEP_KEY for m in run["metrics"])
    assert run["exit"].exit_code == 0


def test_failed_run_and_all_nan_histogram(runs_dir: Path) -> None:
    config = _config(runs_dir)
    backend = WandbBackend(config, config.run_dir, config.to_dict())
    backend.start()
    # What the worker hands over for values none of which is finite (see records.Histogram): W&B cannot
    # hold zero bins, and a made-up bin would be data that never existed.
    empty = Histogram("grad/w", None, 3, time.time(), edges=np.zeros(0), counts=np.zeros(0),
                      stats={"min": math.nan, "max": math.nan, "num": 0.0, "sum": 0.0, "sum_squares": 0.0,
                             "nonfinite": 12.0})
    full = Histogram("grad/w", None, 4, time.time(), edges=np.array([0.0, 1.0, 2.0]), counts=np.array([2.0, 1.0]),
                     stats={"min": 0.1, "max": 1.5, "num": 3.0, "sum": 2.0, "sum_squares": 2.5, "nonfinite": 0.0})
    assert backend.write([empty, full]) == []
    backend.close("failed")
    run = read_wandb_run(config.run_dir)
    histograms = _series(run["history"], "grad/w")
    assert [(step, value["values"]) for step, value in histograms] == [(4, [2, 1])]  # type: ignore[index]
    ((step, note),) = _series(run["history"], "grad/w/note")
    assert step == 3 and note["_type"] == "html-file"  # type: ignore[index]
    assert run["exit"].exit_code == 1  # W&B shows the run as failed


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   check=True, capture_output=True)


def test_argv_env_and_git_secrets_never_reach_the_wandb_run(tmp_path: Path) -> None:
    secrets = {"api_key": "KEYSECRET-4f1a9c", "password": "PASSSECRET-77d2", "url": "URLSECRET-9b3e",
               "env": "ENVSECRET-c0ffee", "diff": "DIFFSECRET-51ab", "remote": "GITSECRET-e4d1"}
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "remote", "add", "origin", f"https://ci:{secrets['remote']}@github.com/lab/vgen.git")
    (repo / "settings.py").write_text("lr = 0.1\n")
    _git(repo, "add", "settings.py")
    _git(repo, "commit", "-qm", "init")
    (repo / "settings.py").write_text(f"lr = 0.1\npassword = '{secrets['diff']}'\n")  # uncommitted: a dirty diff
    (repo / "train.py").write_text(textwrap.dedent("""
        from opusclip_track import AdvancedExperimentTracker, TrackingConfig
        config = TrackingConfig(experiment_name="s", run_name="s", log_dir="runs", use_tensorboard=False,
                                system_monitor_interval_s=0)
        with AdvancedExperimentTracker(config) as tracker:
            tracker.log_metrics({"loss": 1.0}, step=0)
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_TOKEN": secrets["env"], "WANDB_SAVE_CODE": "true"}
    env.pop("WANDB_DISABLE_GIT", None)  # W&B looks at git as it would for a user
    argv = ["--api-key", secrets["api_key"], f"--password={secrets['password']}",
            "--db", f"postgresql://lab:{secrets['url']}@db.example.com/runs"]
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    run_dir = repo / "runs" / "s"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    for path in files:
        data = path.read_bytes()
        leaked = [name for name, secret in secrets.items() if secret.encode() in data]
        assert not leaked, f"{path.relative_to(run_dir)} holds the {leaked} secret(s)"
    run = read_wandb_run(run_dir)
    assert run["history"][0]["loss"] == 1.0
    command = run["config"]["environment"]["command"]  # our redacted copy of the command line
    assert command[1:3] == ["--api-key", "***REDACTED***"] and command[3] == "--password=***REDACTED***"


def test_close_returns_when_the_wandb_file_is_complete(runs_dir: Path) -> None:
    """`run.finish()` returns before the W&B service has written the run's `.wandb` file (measured: none of 100
    rows in one try of three); `close()` returns only once it is complete, so it is read right after, five times."""
    from opusclip_track.records import Scalars

    for attempt in range(5):
        config = _config(runs_dir, run_name=f"complete-{attempt}")
        backend = WandbBackend(config, config.run_dir, config.to_dict())
        backend.start()
        assert backend.write([Scalars(step, time.time(), {"loss": float(step)}) for step in range(200)]) == []
        backend.close("finished")
        run = read_wandb_run(config.run_dir)  # no waiting: what is on disk now
        assert [row[STEP_KEY] for row in run["history"]] == list(range(200)), f"attempt {attempt}"
        assert run["exit"] is not None and run["exit"].exit_code == 0


def test_an_image_whose_file_is_gone_is_sent_from_memory_and_a_clip_without_its_mp4_fails_alone(
        runs_dir: Path, tmp_path: Path) -> None:
    from opusclip_track.media import encode_png
    from opusclip_track.records import Media

    config = _config(runs_dir)
    backend = WandbBackend(config, config.run_dir, config.to_dict())
    backend.start()
    png = encode_png(np.full((8, 12, 3), 200, np.uint8))
    image = Media("image", "samples/frame", 3, time.time(), None, {"height": 8, "width": 12},
                  files={"png": tmp_path / "gone.png"}, encoded={"png": png})  # the file was removed
    clip = Media("video", "samples/clip", 3, time.time(), None, {"fps": 4.0, "height": 8, "width": 12},
                 files={"mp4": tmp_path / "gone.mp4"}, encoded={"gif": b"GIF89a"})
    ((failed, error),) = backend.write([image, clip])
    backend.close("finished")
    assert failed is clip and isinstance(error, FileNotFoundError) and "gone.mp4" in str(error)
    run = read_wandb_run(config.run_dir)
    ((step, shown),) = _series(run["history"], "samples/frame")
    assert step == 3 and shown["_type"] == "image-file" and (shown["width"], shown["height"]) == (12, 8)  # type: ignore[index]
    assert [p for p in run["files"] if p.suffix == ".png"], "the PNG is in the run's files"


def test_a_wandb_sweep_trial_logs_true_steps_with_the_backends_settings(tmp_path: Path) -> None:
    """The W&B engine's own run per trial (what `wandb.agent` calls; here in a process of its own, offline, without
    the agent): values reported out of step order keep their steps, and W&B's argv/metadata capture is off as in
    the backend."""
    (tmp_path / "trial.py").write_text(textwrap.dedent("""
        from opusclip_track.sweep import SweepConfig
        from opusclip_track.sweep.wandb_agent import _WandbTrial

        def objective(params, ctx):
            for step in (5, 2, 9):  # a late evaluation arrives after a later one
                ctx.report(float(step), step)
            return 1.0

        config = SweepConfig.coerce({"name": "s", "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
                                     "parameters": {"lr": {"values": [0.1]}}})
        _WandbTrial(config, objective, {"log_dir": "runs", "system_monitor_interval_s": 0})()
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}  # the agent's runs are online
    done = subprocess.run([sys.executable, "trial.py", "--api-key", "KEYSECRET-31d"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    run = read_wandb_run(tmp_path / "wandb")
    assert [(step, value) for step, value in _series(run["history"], "val/loss")] == [(5, 5.0), (2, 2.0), (9, 9.0)]
    assert any(m.glob_name == "*" and m.step_metric == STEP_KEY for m in run["metrics"])
    leaks = [p for p in (tmp_path / "wandb").rglob("*") if p.is_file() and b"KEYSECRET-31d" in p.read_bytes()]
    assert leaks == [], "W&B's own argv capture is off, as in the backend"
