"""`OpusclipLogger` under a real Lightning `Trainer` on the CPU: a tiny video LightningModule whose `self.log`
values, read back from the store, TensorBoard and W&B, are what Lightning's own CSVLogger recorded in the same run
(same keys, steps and values); a clip logged through `self.logger.experiment`; the `ModelCheckpoint` best file
recorded; and a run whose training raises ends "failed"."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from _readers import scalars
from _wandb_reader import read_wandb_run
from opusclip_track import RunStore, list_runs
from opusclip_track.integrations.lightning import OpusclipLogger
from opusclip_track.media import read_video


class TinyVideoModule(pl.LightningModule):
    """Predicts a clip from its noisy copy; (N, C, T, H, W) clips of 4 frames, 16x16."""

    def __init__(self, lr: float = 0.05, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Conv3d(3, 3, 3, padding=1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.hparams["fail_at_step"] == self.global_step:
            raise RuntimeError("diverged")
        loss = torch.nn.functional.mse_loss(self.net(batch + 0.1 * torch.randn_like(batch)), batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        prediction = self.net(batch)
        self.log("val/loss", torch.nn.functional.mse_loss(prediction, batch))
        if batch_idx == 0:
            clip = prediction[0].clamp(0, 1).permute(1, 0, 2, 3)  # (T, C, H, W)
            self.logger.experiment.log_video(clip, "samples/prediction", step=self.global_step, fps=4)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def _loader() -> torch.utils.data.DataLoader[Any]:
    clips = torch.rand(8, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    return torch.utils.data.DataLoader(clips, batch_size=2)  # type: ignore[arg-type]


def _trainer(tmp_path: Path, logger: Any, **options: Any) -> pl.Trainer:
    return pl.Trainer(logger=logger, max_steps=6, accelerator="cpu", enable_progress_bar=False,
                      enable_model_summary=False, log_every_n_steps=1, val_check_interval=3,
                      check_val_every_n_epoch=None, num_sanity_val_steps=0, limit_val_batches=2,
                      default_root_dir=str(tmp_path), **options)


def _csv_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key != "step" and value != "":
                    out.setdefault(key, []).append((int(row["step"]), float(value)))
    return out


def _assert_points(actual: list[tuple[int, float]], expected: list[tuple[int, float]], what: str) -> None:
    assert [s for s, _ in actual] == [s for s, _ in expected], what
    assert [v for _, v in actual] == pytest.approx([v for _, v in expected], rel=1e-6), what


def test_a_trainer_logs_every_value_at_lightnings_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    logger = OpusclipLogger(run_name="pl-run", project_name="pl-test", log_dir=str(tmp_path / "runs"),
                            checkpoint_dir=str(tmp_path / "ckpt"), wandb_mode="offline", system_monitor_interval_s=0.0,
                            flush_interval_s=0.2)
    reference = CSVLogger(str(tmp_path / "csv"), name="reference")
    best = ModelCheckpoint(monitor="val/loss", mode="min", save_top_k=1)
    _trainer(tmp_path, [logger, reference], callbacks=[best]).fit(TinyVideoModule(), _loader(), _loader())

    assert [r.name for r in list_runs(tmp_path / "runs")] == ["pl-run"]
    run_dir = tmp_path / "runs" / "pl-run"
    expected = _csv_metrics(Path(reference.log_dir) / "metrics.csv")
    assert {"train/loss", "val/loss", "epoch"} <= set(expected)
    assert [s for s, _ in expected["val/loss"]] == [2, 5]  # validation after optimiser steps 3 and 6
    with RunStore(run_dir) as store:
        stored = {key: [(s, v) for s, _, v in store.history(key)] for key in expected}
        meta = store.meta()
        hparams = store.events("hparams")
        artifacts = store.events("artifact")
        clips = store.events("video")
    read = {"tensorboard": scalars("tensorboard", run_dir), "wandb": scalars("wandb", run_dir)}
    for key, points in expected.items():
        _assert_points(stored[key], points, f"store {key}")
        for backend, values in read.items():
            _assert_points(values[key], points, f"{backend} {key}")

    assert hparams[0]["data"]["params"] == {"lr": 0.05, "fail_at_step": None}
    assert read_wandb_run(run_dir)["config"]["lr"] == 0.05
    assert [c["step"] for c in clips] == [3, 6]
    assert tuple(read_video(clips[0]["path"])[0].shape) == (4, 3, 16, 16)

    assert meta["status"] == "finished"
    recorded = meta["config"]["lightning_checkpoints"]["val/loss"]
    assert recorded["best_model_path"] == best.best_model_path and Path(best.best_model_path).is_file()
    assert recorded["best_model_score"] == pytest.approx(float(best.best_model_score))
    assert recorded["best_model_score"] == pytest.approx(min(v for _, v in expected["val/loss"]))
    (artifact,) = artifacts
    assert artifact["path"] == best.best_model_path and artifact["data"]["aliases"] == ["best"]
    assert [a.name for a in read_wandb_run(run_dir)["artifacts"]] == ["model-pl-run"]


def test_training_that_raises_ends_the_run_failed(tmp_path: Path) -> None:
    logger = OpusclipLogger(run_name="pl-fails", log_dir=str(tmp_path / "runs"), use_wandb=False,
                            system_monitor_interval_s=0.0)
    with pytest.raises(RuntimeError, match="diverged"):
        _trainer(tmp_path, logger).fit(TinyVideoModule(fail_at_step=4), _loader(), _loader())
    with RunStore(tmp_path / "runs" / "pl-fails") as store:
        assert store.meta()["status"] == "failed"
        assert [s for s, _, _ in store.history("train/loss")] == [0, 1, 2, 3]  # what was logged is kept


def test_the_logger_reopens_its_run_after_fit_for_test(tmp_path: Path) -> None:
    class Tested(TinyVideoModule):
        def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
            self.log("test/loss", torch.nn.functional.mse_loss(self.net(batch), batch))

    logger = OpusclipLogger(run_name="pl-fit-test", log_dir=str(tmp_path / "runs"), use_wandb=False,
                            use_tensorboard=False, system_monitor_interval_s=0.0)
    trainer = _trainer(tmp_path, logger, enable_checkpointing=False)
    module = Tested()
    trainer.fit(module, _loader(), _loader())
    trainer.test(module, _loader())
    assert [r.name for r in list_runs(tmp_path / "runs")] == ["pl-fit-test"]
    with RunStore(tmp_path / "runs" / "pl-fit-test") as store:
        assert len(store.history("test/loss")) == 1 and len(store.history("train/loss")) == 6
        assert store.meta()["status"] == "finished"
