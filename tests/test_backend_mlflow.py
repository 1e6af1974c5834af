"""The MLflow backend against MLflow itself: the default local SQLite store, and a real `mlflow server` on a loopback
port (killed and restarted mid-run). Everything is read back through `MlflowClient`, as a user would."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Run

from _mlflow_server import MlflowServer, mlflow_server
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.backends.mlflow import MAX_PARAM_LENGTH, MlflowBackend
from opusclip_track.cli import main
from opusclip_track.config import REDACTED
from opusclip_track.media import read_video

PROJECT = "opusclip-tests"
HTTP_SETTINGS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(scope="module")
def server() -> Iterator[MlflowServer]:
    yield from mlflow_server()


@pytest.fixture(autouse=True)
def _http_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend sets MLflow's HTTP retry variables when unset; monkeypatch restores them after each test."""
    for name in HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _config(tmp_path: Path, **overrides: Any) -> TrackingConfig:
    options: dict[str, Any] = {"experiment_name": "mlflow-test", "project_name": PROJECT,
                               "log_dir": str(tmp_path / "runs"), "checkpoint_dir": str(tmp_path / "ckpt"),
                               "use_wandb": False, "use_tensorboard": False, "backends": ["mlflow"],
                               "system_monitor_interval_s": 0.0, "flush_interval_s": 0.2}
    options.update(overrides)
    return TrackingConfig(**options)


def _find_run(client: MlflowClient, run_name: str) -> Run:
    experiment = client.get_experiment_by_name(PROJECT)
    assert experiment is not None, f"no MLflow experiment {PROJECT!r}"
    runs = client.search_runs([experiment.experiment_id], f"tags.`opusclip.run_name` = '{run_name}'")
    assert len(runs) == 1, f"expected one MLflow run named {run_name}, found {len(runs)}"
    return runs[0]


def _history(client: MlflowClient, run: Run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def _git_commit(where: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "start")
    return git("rev-parse", "HEAD").strip()


def _log_everything(tracker: AdvancedExperimentTracker) -> None:
    tracker.log_hyperparameters({"lr": 3e-4, "model": {"depth": 4, "name": "unet"}, "prompt": "a cat " * 1500,
                                 "hf_token": "hf_abcdefgh"})
    for step in range(0, 60, 3):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "train/grad norm": float(step),
                             "eval/psnr (dB)": 20.0 + step}, step=step)
    tracker.log_metrics({"bad/nan": math.nan, "bad/inf": math.inf, "bad/neg_inf": -math.inf}, step=60)
    tracker.log_metrics({f"probe/{i:04d}": float(i) for i in range(1500)}, step=61)  # > 1000 in one batch
    clip = torch.linspace(0, 1, 8 * 3 * 32 * 48).reshape(8, 3, 32, 48)
    tracker.log_video(clip, "samples/generated", step=61, fps=8)
    tracker.log_image(torch.rand(3, 16, 16), "samples/frame", step=61)
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    tracker.log_figure(figure, "plots/curve", step=61)
    tracker.log_table("eval/per_frame", ["t", "psnr"], [[0, 20.5], [1, 21.0]], step=61)
    tracker.log_hyperparameters({"lr": 1e-4})  # MLflow params cannot change: kept, new value in a tag
    tracker.save_checkpoint(torch.nn.Linear(2, 2), metrics={"val/loss": 0.5}, step=61)


def _check_everything(client: MlflowClient, tracker: AdvancedExperimentTracker, commit: str, tmp_path: Path) -> None:
    run = _find_run(client, tracker.run_name)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == tracker.run_name
    tags = run.data.tags
    assert tags["group"] == "ablation" and tags["tags"] == "baseline, cpu"
    assert tags["mlflow.note.content"].startswith("first try") and "abc123" not in tags["mlflow.note.content"]
    assert tags["mlflow.source.git.commit"] == commit

    params = run.data.params
    assert params["lr"] == "0.0003" and tags["param_changed/lr"] == "0.0001"
    assert params["model/depth"] == "4" and params["model/name"] == "unet"
    assert params["hf_token"] == REDACTED and "hf_abcdefgh" not in str(params)
    assert len(params["prompt"]) == MAX_PARAM_LENGTH and params["prompt"].startswith("a cat a cat")
    assert "[truncated by opusclip-track: 9000 chars" in params["prompt"]
    assert params["experiment_name"] == "mlflow-test" and params["environment/git/commit"] == commit

    with RunStore(tracker.run_dir) as store:
        times = {step: wall for step, wall, _ in store.history("train/loss")}
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / (s + 1)) for s in range(0, 60, 3)]
    assert {m.step: m.timestamp for m in history} == {s: int(t * 1000) for s, t in times.items()}
    assert _history(client, run, "train/grad norm") == [(s, float(s)) for s in range(0, 60, 3)]
    # MLflow refuses '(' and '%' in names: the name it accepts, the same points.
    assert _history(client, run, "eval/psnr _dB_") == [(s, 20.0 + s) for s in range(0, 60, 3)]
    assert math.isnan(_history(client, run, "bad/nan")[0][1])
    # MLflow's SQL store keeps +-inf as the largest finite doubles.
    assert _history(client, run, "bad/inf") == [(60, sys.float_info.max)]
    assert _history(client, run, "bad/neg_inf") == [(60, -sys.float_info.max)]
    probes = {k: v for k, v in run.data.metrics.items() if k.startswith("probe/")}
    assert probes == {f"probe/{i:04d}": float(i) for i in range(1500)}

    listed = {f.path for folder in ("clips", "images", "figures", "tables", "checkpoints")
              for f in client.list_artifacts(run_id, folder)}
    assert {"clips/samples_generated_step00000061.mp4", "images/samples_frame_step00000061.png",
            "figures/plots_curve_step00000061.png", "tables/eval_per_frame_step00000061.json"} <= listed
    checkpoint = tags["opusclip.checkpoint.best"]
    assert checkpoint.startswith("checkpoints/ckpt-") and {checkpoint, f"{checkpoint}.json"} <= listed
    local = client.download_artifacts(run_id, "clips/samples_generated_step00000061.mp4", str(tmp_path))
    frames, fps = read_video(local)
    assert tuple(frames.shape) == (8, 3, 32, 48) and fps == 8
    expected = torch.linspace(0, 1, 8 * 3 * 32 * 48).reshape(8, 3, 32, 48)
    assert np.abs(frames.float().numpy() / 255 - expected.numpy()).mean() < 0.02


@pytest.mark.parametrize("where", ["local", "server"])
def test_everything_is_read_back_through_mlflow_client(where: str, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    commit = _git_commit(tmp_path)
    uri = request.getfixturevalue("server").url if where == "server" else None
    cfg = _config(tmp_path, mlflow_tracking_uri=uri, group="ablation", tags=["baseline", "cpu"],
                  notes="first try token=abc123", checkpoint_monitor="val/loss")
    with AdvancedExperimentTracker(cfg) as tracker:
        _log_everything(tracker)
    assert RunStore(tracker.run_dir).meta()["backend_errors"] == {"mlflow": 0}
    if where == "local":  # the default: a SQLite store under the run, no server
        assert (tracker.run_dir / "mlflow" / "mlflow.db").is_file()
        uri = f"sqlite:///{(tracker.run_dir / 'mlflow' / 'mlflow.db').resolve()}"
    _check_everything(MlflowClient(uri), tracker, commit, tmp_path)


def test_a_resumed_run_continues_the_same_mlflow_run(tmp_path: Path) -> None:
    cfg = _config(tmp_path, run_name="resumable")
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_metrics({"train/loss": 1.0}, step=0)
    with AdvancedExperimentTracker(_config(tmp_path, run_name="resumable", resume="resumable")) as tracker:
        tracker.log_metrics({"train/loss": 0.5}, step=1)
    client = MlflowClient(f"sqlite:///{(tracker.run_dir / 'mlflow' / 'mlflow.db').resolve()}")
    run = _find_run(client, "resumable")
    assert _history(client, run, "train/loss") == [(0, 1.0), (1, 0.5)]
    assert run.info.status == "FINISHED" and run.data.tags["param_changed/resume"] == "resumable"


def test_server_killed_mid_run_loses_nothing(server: MlflowServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once: the tracker's own retries recover
    with AdvancedExperimentTracker(_config(tmp_path, mlflow_tracking_uri=server.url)) as tracker:
        for step in range(10):
            tracker.log_metrics({"train/loss": float(step)}, step=step)
        tracker.flush()
        server.kill()
        for step in range(10, 20):
            tracker.log_metrics({"train/loss": float(step)}, step=step)
        tracker.flush()  # MLflow refused these; the store has them and the backend keeps them for a retry
        assert tracker.backend_errors["mlflow"] > 0
        server.start()
        for step in range(20, 30):
            tracker.log_metrics({"train/loss": float(step)}, step=step)
    client = MlflowClient(server.url)
    run = _find_run(client, tracker.run_name)
    assert _history(client, run, "train/loss") == [(s, float(s)) for s in range(30)]
    assert run.info.status == "FINISHED"
    assert RunStore(tracker.run_dir).meta()["backend_gave_up"] == {"mlflow": 0}


def test_sync_replays_what_a_long_outage_missed(server: MlflowServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = _config(tmp_path, mlflow_tracking_uri=server.url)
    with AdvancedExperimentTracker(cfg) as tracker:
        tracker.log_hyperparameters({"lr": 0.01})
        tracker.log_metrics({"train/loss": 0.0}, step=0)
        tracker.flush()
        server.kill()
        for step in range(1, 12):  # each flush is one more failed try; the oldest records are given up
            tracker.log_metrics({"train/loss": float(step)}, step=step)
            tracker.flush()
        server.start()
        tracker.log_metrics({"train/loss": 12.0}, step=12)
    assert RunStore(tracker.run_dir).meta()["backend_gave_up"]["mlflow"] > 0
    client = MlflowClient(server.url)
    missing = set(range(13)) - {s for s, _ in _history(client, _find_run(client, tracker.run_name), "train/loss")}
    assert missing, "the outage was meant to outlast the tracker's retries"

    assert main(["sync", tracker.run_name, "--log-dir", str(tmp_path / "runs"), "--to", "mlflow"]) == 0
    run = _find_run(client, tracker.run_name)
    assert _history(client, run, "train/loss") == [(s, float(s)) for s in range(13)]  # once each
    assert run.data.params["lr"] == "0.01" and run.info.status == "FINISHED"


def test_missing_mlflow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` does when it is not installed
    backend = MlflowBackend(_config(tmp_path), tmp_path / "run", {})
    with pytest.raises(ModuleNotFoundError, match=r"pip install opusclip-track\[mlflow\]"):
        backend.start()
