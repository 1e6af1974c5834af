"""`opusclip-track sync RUN --to BACKEND`: the whole local store replayed, read back by each backend's real reader."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlencode

import pytest
import torch

from _readers import scalars, tensorboard_accumulator
from _runs import make_run
from _tensorboard_server import TensorBoardServer
from _wandb_reader import read_wandb_run
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.backends import REGISTRY
from opusclip_track.backends.wandb import STEP_KEY
from opusclip_track.cli import main

CLIP_STEPS = [0, 2, 4, 6, 8]


def _log_everything(tracker: AdvancedExperimentTracker) -> None:
    """What a training job records: hyperparameters, a config update, scalars, 5 clips, an image, a table,
    a histogram, text and a checkpoint (sent as the best-checkpoint artifact at close)."""
    torch.manual_seed(0)
    tracker.log_hyperparameters({"lr": 0.01, "model": {"width": 8}})
    tracker.update_config({"dataset": "moving-shapes"})
    for step in range(10):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "video/psnr": 20.0 + step}, step=step)
        if step in CLIP_STEPS:
            tracker.log_video(torch.rand(4, 3, 16, 16), "samples/clip", step=step)
    tracker.log_image(torch.rand(3, 16, 16), "samples/frame", step=9)
    tracker.log_table("results", ["model", "psnr"], [["conv", 14.9]], step=9)
    tracker.log_histogram("weights", torch.randn(100), step=9)
    tracker.log_text("notes", "converged", step=9)
    tracker.save_checkpoint(torch.nn.Linear(2, 2), step=9, metrics={"val/loss": 0.1})


def make_full_run(runs_dir: Path, name: str, *, fail: bool = False, **overrides: object) -> Path:
    """A `--no-wandb` run (`use_wandb=False`) holding every kind of record; `fail` ends it with an exception."""
    options: dict[str, object] = {"experiment_name": "sync", "log_dir": str(runs_dir), "use_wandb": False,
                                  "run_name": name, "system_monitor_interval_s": 0.0,
                                  "checkpoint_dir": str(runs_dir.parent / "checkpoints")}
    options.update(overrides)
    tracker = AdvancedExperimentTracker(TrackingConfig(**options))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="diverged") if fail else contextlib.nullcontext(), tracker:
        _log_everything(tracker)
        if fail:
            raise RuntimeError("diverged")
    return tracker.run_dir


def _series(rows: list[dict[str, object]], key: str) -> list[tuple[int, object]]:
    return [(int(row[STEP_KEY]), row[key]) for row in rows if key in row]  # type: ignore[call-overload]


def test_sync_replays_the_store_into_wandb_and_tensorboard(runs_dir: Path) -> None:
    run_dir = make_run(runs_dir, "run-c", 1.0)  # W&B was off while it ran
    assert main(["sync", "run-c", "--log-dir", str(runs_dir), "--to", "wandb"]) == 0
    history = read_wandb_run(run_dir)["history"]
    assert [(r["_step"], r["train/loss"]) for r in history if "train/loss" in r] == \
        [(s, 1.0 + s) for s in range(5)]
    assert main(["sync", "run-c", "--log-dir", str(runs_dir), "--to", "tensorboard"]) == 0
    replayed = scalars("tensorboard", run_dir)  # into the run itself: no second run beside it
    assert replayed["video/psnr"] == [(s, 20.0 + s) for s in range(5)]


def test_sync_offers_every_registered_backend(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new backend (mlflow) is one registry entry: `sync --to` takes its choices from the registry."""
    from mlflow import MlflowClient

    run_dir = make_run(runs_dir, "run-m", 1.0)
    assert main(["sync", "run-m", "--log-dir", str(runs_dir), "--to", "mlflow"]) == 0
    client = MlflowClient(f"sqlite:///{(run_dir / 'mlflow' / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 1.0 + s) for s in range(5)]
    assert "opusclip.resumed_at_step" not in run.data.tags, "a replay is not a resume"
    assert main(["sync", "run-m", "--log-dir", str(runs_dir), "--to", "nope"]) == 2
    assert ", ".join(repr(name) for name in sorted(REGISTRY)) in capsys.readouterr().err


# ---- every record kind -------------------------------------------------------------------------------------------
def test_a_no_wandb_run_gets_its_clips_table_image_scalars_and_checkpoint_into_wandb(
        runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README step 2 promises MP4 clips and the best checkpoint in W&B; sync sent scalars, text and hparams only."""
    run_dir = make_full_run(runs_dir, "no-wandb")
    assert not (run_dir / "wandb").exists()
    assert main(["sync", "no-wand", "--log-dir", str(runs_dir), "--to", "wandb"]) == 0  # a unique prefix
    said = capsys.readouterr().out
    assert "5 video" in said and "1 artifact" in said and "closed finished" in said
    run = read_wandb_run(run_dir)  # sync has returned: the offline run is complete
    rows = run["history"]

    clips = _series(rows, "samples/clip")
    assert [step for step, _ in clips] == CLIP_STEPS
    assert all(clip["_type"] == "video-file" for _, clip in clips)  # type: ignore[index]
    uploaded = {p.name for p in run["files"] if p.suffix == ".mp4"}
    assert uploaded == {Path(clip["path"]).name for _, clip in clips} and len(uploaded) == 5  # type: ignore[index]
    ((step, image),) = _series(rows, "samples/frame")
    assert step == 9 and image["_type"] == "image-file"  # type: ignore[index]
    ((step, table),) = _series(rows, "results")
    assert step == 9 and table["_type"] == "table-file"  # type: ignore[index]
    ((step, histogram),) = _series(rows, "weights")
    assert step == 9 and histogram["_type"] == "histogram"  # type: ignore[index]
    assert [step for step, _ in _series(rows, "notes")] == [9]

    with RunStore(run_dir) as store:  # every scalar, at its true step, with its value
        for key in store.keys():
            assert sorted(_series(rows, key)) == sorted((s, v) for s, _, v in store.history(key)), key
    (artifact,) = [a for a in run["artifacts"] if a.type == "model"]  # (W&B keeps the table as one too)
    assert set(artifact.aliases) >= {"best", "latest"}
    assert artifact.manifest.contents[0].digest
    assert run["config"]["lr"] == 0.01 and run["config"]["dataset"] == "moving-shapes"
    assert run["exit"].exit_code == 0


def test_a_failed_run_replays_into_mlflow_as_failed_with_its_artifacts(runs_dir: Path) -> None:
    """sync closed every replay FINISHED: a failed run became a finished one in MLflow."""
    from mlflow import MlflowClient

    run_dir = make_full_run(runs_dir, "crashed", fail=True)
    assert main(["sync", "crashed", "--log-dir", str(runs_dir), "--to", "mlflow"]) == 0
    client = MlflowClient(f"sqlite:///{(run_dir / 'mlflow' / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
    files = {folder: sorted(Path(f.path).suffix for f in client.list_artifacts(run.info.run_id, folder))
             for folder in ("clips", "images", "tables", "checkpoints")}
    assert files == {"clips": [".mp4"] * 5, "images": [".png"], "tables": [".json"], "checkpoints": [".json", ".pt"]}
    with RunStore(run_dir) as store:
        for key in ("train/loss", "video/psnr"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted((m.step, m.value) for m in history) == [(s, v) for s, _, v in store.history(key)]
    assert run.data.params["lr"] == "0.01"


# ---- TensorBoard: the run itself, each point once ----------------------------------------------------------------
def test_tensorboard_replay_goes_into_the_run_and_shows_each_point_once(runs_dir: Path) -> None:
    """`--to tensorboard` wrote runs/<run>/replay, which TensorBoard listed as a second run. Now the replay goes
    into the run's own directory: a run that had TensorBoard off gets it there; a run that had it on is shown
    once, the replay's restart marker superseding its earlier event file."""
    without = make_full_run(runs_dir, "tb-off", use_tensorboard=False)
    with_tb = make_full_run(runs_dir, "tb-on")
    assert not list(without.glob("events.out.tfevents.*"))
    for name in ("tb-off", "tb-on"):
        assert main(["sync", name, "--log-dir", str(runs_dir), "--to", "tensorboard"]) == 0

    for run_dir in (without, with_tb):  # TensorBoard's own EventAccumulator
        accumulator = tensorboard_accumulator(run_dir)
        with RunStore(run_dir) as store:
            for key in store.keys():
                shown = [(e.step, e.value) for e in accumulator.Scalars(key)]
                assert shown == [(s, pytest.approx(v)) for s, _, v in store.history(key)], (run_dir.name, key)
        assert [e.step for e in accumulator.Images("samples/clip")] == CLIP_STEPS
        assert [e.step for e in accumulator.Images("samples/frame")] == [9]
        assert [e.step for e in accumulator.Histograms("weights")] == [9]

    with TensorBoardServer(runs_dir) as server:  # what a person sees
        server.wait_for_runs(["tb-off", "tb-on"])
        assert sorted(server.get("/data/runs")) == ["tb-off", "tb-on"]
        for run in ("tb-off", "tb-on"):
            points = server.get("/data/plugin/scalars/scalars?" + urlencode({"run": run, "tag": "train/loss"}))
            assert [step for _, step, _ in points] == list(range(10)), run
            images = server.get("/data/plugin/images/images?" + urlencode({"run": run, "tag": "samples/clip"}))
            assert [image["step"] for image in images] == CLIP_STEPS, run
            texts = server.get("/data/plugin/text/text?" + urlencode({"run": run, "tag": "notes"}))
            assert [text["step"] for text in texts] == [9], run
            table = server.get("/data/plugin/text/text?" + urlencode({"run": run, "tag": "results"}))
            assert [text["step"] for text in table] == [9], run
