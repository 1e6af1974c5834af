"""Checkpoints through the tracker: files under checkpoints/<run>/, W&B model artifacts, resuming a run."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from _readers import read_back, scalars, tensorboard_app_steps
from _wandb_reader import read_wandb_run
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.backends import REGISTRY, Backend
from opusclip_track.records import Artifact


def small_model() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return model, optimizer, scheduler


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
    x = torch.randn(16, 8)
    loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def config(tmp_path: Path, **overrides: object) -> TrackingConfig:
    options: dict[str, object] = {"experiment_name": "ckpt", "log_dir": str(tmp_path / "runs"),
                                  "checkpoint_dir": str(tmp_path / "checkpoints"), "use_wandb": False,
                                  "checkpoint_monitor": "val/loss", "checkpoint_keep_last": 2}
    options.update(overrides)
    return TrackingConfig(**options)  # type: ignore[arg-type]


def test_best_checkpoint_becomes_a_wandb_model_artifact(tmp_path: Path) -> None:
    model, optimizer, scheduler = small_model()
    with AdvancedExperimentTracker(config(tmp_path, use_wandb=True)) as tracker:
        for step, val in enumerate([0.9, 0.5, 0.7, 0.4]):
            tracker.log_metrics({"val/loss": val}, step=step)
            tracker.save_checkpoint(model, optimizer, scheduler, epoch=step, metrics={"val/loss": val})
    best = tracker.checkpoints.best
    assert best is not None and best.step == 3 and best.path.parent == tmp_path / "checkpoints" / tracker.run_name
    artifacts = read_wandb_run(tracker.run_dir)["artifacts"]
    (artifact,) = artifacts
    assert artifact.type == "model" and set(artifact.aliases) >= {"best", "latest"}
    assert artifact.manifest.contents[0].digest  # the checkpoint file is in it
    assert RunStore(tracker.run_dir).events("artifact")[-1]["path"] == str(best.path)


def test_resume_continues_model_optimizer_scheduler_rng_and_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, optimizer, scheduler = small_model()
    with AdvancedExperimentTracker(config(tmp_path)) as first:
        for step in range(6):
            loss = train_step(model, optimizer)
            scheduler.step()
            first.log_metrics({"train/loss": loss}, step=step)
            if step == 3:
                first.save_checkpoint(model, optimizer, scheduler, epoch=0, metrics={"val/loss": loss})
                expected_state = {k: v.clone() for k, v in model.state_dict().items()}
                expected_next = torch.rand(3)  # what an uninterrupted run draws next
        # steps 4 and 5 are logged, then the process "crashes" before its next checkpoint
    resumed_model, resumed_opt, resumed_sched = small_model()
    with AdvancedExperimentTracker(config(tmp_path, resume=True)) as second:
        loaded = second.load_checkpoint("latest", resumed_model, resumed_opt, resumed_sched)
        assert second.run_name == first.run_name and loaded.step == 3 and second.step == 3
        assert torch.equal(torch.rand(3), expected_next), "RNG state restored"
        for key, value in expected_state.items():
            assert torch.equal(resumed_model.state_dict()[key], value)
        assert resumed_sched.last_epoch == 4 and resumed_opt.param_groups[0]["lr"] == scheduler.base_lrs[0] * 0.5
        for _ in range(3):
            second.log_metrics({"train/loss": train_step(resumed_model, resumed_opt)})
    steps = [s for s, _, _ in RunStore(first.run_dir).history("train/loss")]
    assert steps == [0, 1, 2, 3, 4, 5, 6], "one history, no duplicated or backwards steps"
    tb_steps = [s for s, _ in scalars("tensorboard", first.run_dir)["train/loss"]]
    assert tb_steps == [0, 1, 2, 3, 4, 5, 6]
    with RunStore(first.run_dir) as store:
        superseded = store.superseded_history("train/loss")[0].tolist()
    assert superseded == [4, 5], "the abandoned steps 4 and 5 are kept aside, not lost"


def _abandoned_and_resumed(tmp_path: Path) -> TrackingConfig:
    """A run that logs clips, text and alerts up to step 5, and is resumed from its checkpoint of step 3: the
    clip at step 4 and the text and alert of step 5 belong to a trajectory that no longer exists."""
    model, optimizer, scheduler = small_model()
    with AdvancedExperimentTracker(config(tmp_path, run_name="resumed")) as first:
        for step in range(6):
            first.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
            if step % 2 == 0:
                first.log_video(torch.rand(4, 3, 8, 8), "samples", step=step, fps=4)
            if step == 3:
                first.save_checkpoint(model, optimizer, scheduler, epoch=0, metrics={"val/loss": 0.5}, step=step)
        first.log_text("notes", "abandoned", step=5)
        first.alert("abandoned", "raised on the abandoned trajectory", step=5)
    resumed = config(tmp_path, resume="resumed")
    with AdvancedExperimentTracker(resumed) as second:
        second.load_checkpoint("latest", *small_model())
        for step in (4, 5, 6):
            second.log_metrics({"train/loss": 2.0 / (step + 1)}, step=step)
        second.log_video(torch.rand(4, 3, 8, 8), "samples", step=6, fps=4)
        second.log_text("notes", "continued", step=6)
    return resumed


def test_a_resume_supersedes_the_clips_text_and_alerts_of_the_abandoned_steps_everywhere(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The store, TensorBoard (its restart marker), a sync into W&B, the report and `runs show` agree: what was
    logged after the checkpoint the run resumed from is gone from view, and kept in the store."""
    from opusclip_track.cli import main
    from opusclip_track.report.data import load_run
    from opusclip_track.sync import sync

    resumed = _abandoned_and_resumed(tmp_path)
    run_dir = resumed.run_dir
    with RunStore(run_dir) as store:
        assert [(e["kind"], e["step"]) for e in store.events() if e["kind"] in ("video", "text", "alert")] == [
            ("video", 0), ("video", 2), ("video", 6), ("text", 6)]
        abandoned = [(e["kind"], e["step"], e["superseded_at"]) for e in store.events(include_superseded=True)
                     if e["superseded_at"] is not None]
    assert abandoned == [("video", 4, 4), ("text", 5, 4), ("alert", 5, 4)], "kept, marked, not deleted"
    shown = tensorboard_app_steps(run_dir)  # what `tensorboard --logdir` shows
    assert (shown["samples"], shown["notes"], shown["train/loss"]) == ([0, 2, 6], [6], [0, 1, 2, 3, 4, 5, 6])
    assert shown["alerts/abandoned"] == [], "the tag remains, its only entry is gone"
    sync(run_dir, "wandb")  # W&B was off during the run: the replay sends what the store shows
    wandb = read_back("wandb", resumed)
    assert wandb.clips == {"samples": [(0, 4), (2, 4), (6, 4)]} and wandb.alerts == {}
    assert wandb.texts == {"notes": [(6, "continued")]}
    assert [s for s, _ in wandb.scalars["train/loss"]] == [0, 1, 2, 3, 4, 5, 6]
    report = load_run(run_dir, ["train/loss"])
    assert [v["step"] for v in report.videos] == [0, 2, 6] and report.alerts == []
    assert main(["runs", "--log-dir", resumed.log_dir, "show", "resumed"]) == 0
    assert "alerts: none" in capsys.readouterr().out.splitlines()


def test_resume_reuses_the_wandb_run_id(tmp_path: Path) -> None:
    with AdvancedExperimentTracker(config(tmp_path, use_wandb=True, run_name="same-run")) as first:
        first.log_metrics({"a": 1.0})
    with AdvancedExperimentTracker(config(tmp_path, use_wandb=True, resume="same-run")) as second:
        second.log_metrics({"a": 2.0})
    runs = sorted((tmp_path / "runs" / "same-run" / "wandb").glob("offline-run-*"))
    ids = {read_wandb_run(r)["run"].run_id for r in runs}
    assert len(runs) == 2 and ids == {"same-run"}


class ArtifactRecorder(Backend):
    """A backend beside TensorBoard (MLflow-like) that keeps the artifacts it is sent."""

    name = "artifacts"
    received: ClassVar[list[Artifact]] = []

    def start(self) -> None:
        pass

    def log_scalars(self, records: object) -> None:
        pass

    def log_hyperparameters(self, record: object) -> None:
        pass

    def log_artifact(self, record: Artifact) -> None:
        ArtifactRecorder.received.append(record)

    def close(self, status: str = "finished") -> None:
        pass


def test_the_best_checkpoint_reaches_every_backend_without_wandb(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "artifacts", f"{__name__}:ArtifactRecorder")
    ArtifactRecorder.received.clear()
    model, optimizer, scheduler = small_model()
    with AdvancedExperimentTracker(config(tmp_path, backends=["artifacts"])) as tracker:  # use_wandb=False
        for step, val in enumerate([0.9, 0.3, 0.7]):
            tracker.save_checkpoint(model, optimizer, scheduler, epoch=step, metrics={"val/loss": val}, step=step)
    best = tracker.checkpoints.best
    assert best is not None and best.step == 1
    (artifact,) = ArtifactRecorder.received
    assert artifact.path == best.path and artifact.type == "model" and set(artifact.aliases) == {"best", "latest"}
    assert RunStore(tracker.run_dir).events("artifact")[-1]["path"] == str(best.path)
