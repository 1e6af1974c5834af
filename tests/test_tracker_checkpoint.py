"""Checkpoints through the tracker: files under checkpoints/<run>/, W&B model artifacts, resuming a run."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from _readers import scalars
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
        (superseded,) = store._conn.execute("SELECT COUNT(*) FROM superseded_scalars").fetchone()
    assert superseded == 2, "the abandoned steps 4 and 5 are kept aside, not lost"


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
