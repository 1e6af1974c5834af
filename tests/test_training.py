"""The training recipe end to end: a real tracker, its SQLite store, media files and checkpoints read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from _readers import tensorboard_accumulator
from _wandb_reader import read_wandb_run
from models import build_model
from models.training import TrainConfig, build_model_for, evaluate, train
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.data import SyntheticVideoDataset

TINY = {"model": "video_generation", "model_options": {"width": 16}, "image_size": 32, "context_frames": 2,
        "future_frames": 4, "train_clips": 32, "val_clips": 4, "batch_size": 4, "sample_clips": 2,
        "warmup_steps": 2, "metrics": ("psnr", "ssim")}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one intra-op thread (tests/_env.py)


def tracker_for(run_name: str, **overrides: object) -> AdvancedExperimentTracker:
    settings: dict[str, object] = {"experiment_name": "train-test", "run_name": run_name, "log_dir": "runs",
                                   "use_wandb": False, **overrides}
    return AdvancedExperimentTracker(TrackingConfig(**settings))  # type: ignore[arg-type]


def steps_of(store: RunStore, key: str) -> list[int]:
    return [step for step, _, _ in store.history(key)]


def test_tiny_run_logs_losses_metrics_samples_and_checkpoints(capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))  # no LPIPS weights can be found
    monkeypatch.delenv("OPUSCLIP_WEIGHTS_DIR", raising=False)
    cfg = TrainConfig(**{**TINY, "metrics": ("psnr", "ssim", "lpips")}, max_steps=6, log_every=1,
                      eval_every=3)
    with tracker_for("tiny") as tracker:
        results = train(build_model_for(cfg), cfg, tracker)
        run_dir = tracker.run_dir

    skipped = [line for line in capsys.readouterr().out.splitlines() if line.startswith("metrics:")]
    assert len(skipped) == 1  # one line, naming the metric and the file it lacks
    assert "skipped lpips (weights file alexnet-owt-7be5be79.pth not found)" in skipped[0]
    assert results["steps"] == 6 and {"val/loss", "video/psnr", "video/ssim", "train/loss"} <= set(results)
    assert "video/lpips" not in results
    store = RunStore(run_dir)
    assert steps_of(store, "train/loss") == [1, 2, 3, 4, 5, 6]
    assert steps_of(store, "video/psnr") == [0, 3, 6] == steps_of(store, "val/loss")
    assert store.history("video/psnr")[-1][2] == pytest.approx(results["video/psnr"])
    # Warmup for 2 steps to the peak, then the cosine decays to its floor at the last step.
    lrs = [value for _, _, value in store.history("train/learning_rate")]
    assert lrs[0] == pytest.approx(cfg.lr / 2) and lrs[1] == pytest.approx(cfg.lr)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    assert len(store.history("train/grad_norm")) == 6
    assert sorted(p.name for p in (run_dir / "media").glob("samples_prediction_*.mp4")) == [
        f"samples_prediction_step{s:08d}.mp4" for s in (0, 3, 6)]
    manifest = sorted(p.name for p in (Path("checkpoints") / "tiny").glob("ckpt-*.pt"))
    assert manifest == ["ckpt-step00000003.pt", "ckpt-step00000006.pt"]


def test_each_evaluation_logs_per_frame_quality_that_the_report_draws(tmp_path: Path) -> None:
    """The report's per-frame section was empty for every run `train` made: it logged no `video/per_frame`."""
    import json

    from opusclip_track.report import build_report

    cfg = TrainConfig(**TINY, max_steps=2, eval_every=2, log_every=1)
    with tracker_for("per-frame") as tracker:
        train(build_model_for(cfg), cfg, tracker, checkpoints=False)
        run_dir = tracker.run_dir
    store = RunStore(run_dir)
    tables = store.events("table", "video/per_frame")
    assert [e["step"] for e in tables] == [0, 2]  # one per evaluation
    for event in tables:
        table = json.loads(Path(event["path"]).read_text())
        assert table["columns"] == ["t", "psnr", "ssim"]
        assert [row[0] for row in table["rows"]] == list(range(cfg.future_frames))
        for i, key in ((1, "video/psnr"), (2, "video/ssim")):  # the score is the mean of its per-frame curve
            (logged,) = [v for step, _, v in store.history(key) if step == event["step"]]
            assert sum(row[i] for row in table["rows"]) / cfg.future_frames == pytest.approx(logged, rel=1e-5)
    build_report([str(run_dir)], tmp_path / "r.html", json_path=tmp_path / "s.json")
    section = (tmp_path / "r.html").read_text().split('<section id="per-frame"', 1)[1].split("</section>", 1)[0]
    assert "No run logged a per-frame table" not in section
    charts = [chart.split("</figure>")[0] for chart in section.split('<figure class="chart"')[1:]]
    assert [c.split('data-key="')[1].split('"')[0] for c in charts] == ["video/psnr", "video/ssim"]
    assert all("(step 2)" in c and c.count("<circle") == 2 * cfg.future_frames for c in charts)  # the last one


def test_training_watches_the_model_so_tensorboard_shows_gradient_norms_and_histograms() -> None:
    """Before: train() never called watch(), so runs showed no grad/* and TensorBoard's Histograms tab was off."""
    from _tensorboard_server import TensorBoardServer

    cfg = TrainConfig(**TINY, max_steps=6, eval_every=3, log_every=1)  # watch_every None: at the evaluations
    with tracker_for("watched") as tracker:
        train(build_model_for(cfg), cfg, tracker, checkpoints=False)
        run_dir = tracker.run_dir
    acc = tensorboard_accumulator(run_dir)
    watched = [e.step for e in acc.Scalars("grad/global_norm")]
    assert watched == [3, 6]
    # The norm of the gradients of the backward pass of step s is the clipping norm that step logged.
    clip_norms = {e.step: e.value for e in acc.Scalars("train/grad_norm")}
    assert [e.value for e in acc.Scalars("grad/global_norm")] == pytest.approx([clip_norms[3], clip_norms[6]],
                                                                               rel=1e-5)
    assert not any(t.startswith("param/") for t in acc.Tags()["scalars"])  # "gradients" by default
    histograms = [t for t in acc.Tags()["histograms"] if t.startswith("grad/")]
    assert histograms and all([h.step for h in acc.Histograms(t)] == [3, 6] for t in histograms)
    with TensorBoardServer(run_dir.parent) as board:  # what a person sees: the Histograms tab and its tags
        board.wait_for_runs([run_dir.name])
        assert board.get("/data/plugins_listing")["histograms"]["enabled"]
        shown = board.get("/data/plugin/histograms/tags")[run_dir.name]
        assert set(histograms) <= set(shown)

    off = TrainConfig(**TINY, max_steps=2, eval_every=2, watch="none")
    with tracker_for("unwatched") as tracker:
        train(build_model_for(off), off, tracker, checkpoints=False)
    assert not [k for k in RunStore(tracker.run_dir).keys() if k.startswith(("grad/", "param/"))]
    with pytest.raises(ValueError, match=r"TrainConfig.watch: expected one of .*received 'weights'"):
        TrainConfig(watch="weights")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"TrainConfig.watch_every: expected None or an int >= 1, received 0"):
        TrainConfig(watch_every=0)


def test_a_run_shorter_than_its_evaluation_interval_is_still_watched_at_its_last_step() -> None:
    """Before: log_freq was eval_every, so a run of fewer steps (quick_start --max-steps 50 with eval_every 200)
    logged no grad/* and left TensorBoard's Histograms tab empty."""
    cfg = TrainConfig(**TINY, max_steps=2, eval_every=5, log_every=1)
    with tracker_for("short") as tracker:
        train(build_model_for(cfg), cfg, tracker, checkpoints=False)
    acc = tensorboard_accumulator(tracker.run_dir)
    assert [e.step for e in acc.Scalars("grad/global_norm")] == [2]
    assert [t for t in acc.Tags()["histograms"] if t.startswith("grad/")]


class _CrashAfter(Dataset[Tensor]):
    """The training clips, until `limit` reads: then the process 'dies' mid-epoch."""

    def __init__(self, data: Dataset[Tensor], limit: int) -> None:
        self.data, self.limit, self.reads = data, limit, 0

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tensor:
        self.reads += 1
        if self.reads > self.limit:
            raise RuntimeError("simulated crash")
        return self.data[index]


def test_resume_after_a_crash_continues_exactly_where_it_stopped() -> None:
    cfg = TrainConfig(**TINY, max_steps=8, log_every=2, eval_every=4)
    data = SyntheticVideoDataset(num_clips=cfg.train_clips, num_frames=cfg.clip_frames, size=cfg.image_size,
                                 seed=cfg.seed)
    with tracker_for("uninterrupted") as tracker:
        reference = build_model_for(cfg)
        train(reference, cfg, tracker)

    crashed = TrainConfig(**TINY, max_steps=8, log_every=2, eval_every=4)
    with tracker_for("crashy") as tracker, pytest.raises(RuntimeError, match="simulated crash"):
        train(build_model_for(crashed), crashed, tracker,
              train_data=_CrashAfter(data, limit=5 * cfg.batch_size))  # dies reading step 5's batch
    resumed_cfg = TrainConfig(**TINY, max_steps=8, log_every=2, eval_every=4, resume=True)
    with tracker_for("crashy", resume="crashy") as tracker:
        model = build_model_for(resumed_cfg)  # fresh weights: everything must come from the step-4 checkpoint
        results = train(model, resumed_cfg, tracker)
        run_dir = tracker.run_dir

    assert results["steps"] == 8
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    store = RunStore(run_dir)
    assert steps_of(store, "train/loss") == [2, 4, 6, 8]  # no step logged twice, none missing


def test_evaluate_scores_the_prediction_against_the_real_future() -> None:
    model = build_model("video_generation", image_size=32, context_frames=2, future_frames=4, width=16)
    clips = SyntheticVideoDataset(num_clips=6, num_frames=7, size=32, seed=5)  # longer clips are cut
    loader = DataLoader(clips, batch_size=4)  # batches of 4 and 2
    results = evaluate(model, loader, metrics=("psnr",))
    batch = torch.stack([clips[i] for i in range(6)])
    with torch.no_grad():
        mse = torch.mean((model(batch[:, :2]) - batch[:, 2:6]) ** 2)
    assert results["val/loss"] == pytest.approx(float(mse), rel=1e-5)
    assert set(results) == {"val/loss", "video/psnr"} and 5 < results["video/psnr"] < 60
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match=r"metrics: 'fvd' needs clips of >= 16 frames"):
        evaluate(model, loader, metrics=("fvd",))


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"TrainConfig.batch_size: expected an int >= 1, received 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"TrainConfig.metrics: expected one or more of"):
        TrainConfig(metrics=("psnr", "mse"))  # type: ignore[arg-type]
    cfg = TrainConfig(**TINY)
    with tracker_for("mismatch") as tracker, pytest.raises(
            ValueError, match=r"model: expected context_frames=2 as in the TrainConfig, received a "
                              r"model with context_frames=4"):
        train(build_model("video_generation", image_size=32, future_frames=4), cfg, tracker)


def test_from_dict_takes_the_names_researchers_bring() -> None:
    cfg = TrainConfig.from_dict({"learning_rate": 3e-4, "max_epochs": 2, "log_frequency": 5, "save_frequency": 50,
                                 "batch_size": 4, "metrics": ["psnr"]})
    assert (cfg.lr, cfg.epochs, cfg.log_every, cfg.eval_every, cfg.batch_size, cfg.metrics) == \
        (3e-4, 2, 5, 50, 4, ("psnr",))
    assert TrainConfig.from_dict({"lr": 1e-3, "epochs": 3}) == TrainConfig(lr=1e-3, epochs=3)
    assert TrainConfig.ALIASES["learning_rate"] == "lr" and TrainConfig.ALIASES["max_epochs"] == "epochs"
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['learning_rat'\].*'lr'.*aliases.*'learning_rate'"):
        TrainConfig.from_dict({"learning_rat": 0.1})
    with pytest.raises(ValueError, match=r"'learning_rate' is an alias of 'lr'; received both"):
        TrainConfig.from_dict({"lr": 0.1, "learning_rate": 0.2})
    # The message names the alias whichever of the two comes first (it used to say "'lr' is an alias of 'lr'").
    with pytest.raises(ValueError, match=r"TrainConfig: 'learning_rate' is an alias of 'lr'; received both"):
        TrainConfig.from_dict({"learning_rate": 0.2, "lr": 0.1})
    with pytest.raises(ValueError, match=r"TrainConfig: 'max_epochs' is an alias of 'epochs'; received both"):
        TrainConfig.from_dict({"max_epochs": 2, "batch_size": 4, "epochs": 3})


@pytest.mark.parametrize(("field", "value"), [("lr", float("nan")), ("lr", float("inf")), ("lr", True),
                                              ("grad_clip", float("inf")), ("sample_fps", float("nan")),
                                              ("max_steps", True), ("epochs", True)])
def test_unusable_numbers_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}: expected .*received {value!r}"):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_sample_clips_zero_trains_without_logging_clips() -> None:
    cfg = TrainConfig(**{**TINY, "sample_clips": 0}, max_steps=2, eval_every=2)
    with tracker_for("no-samples") as tracker:
        results = train(build_model_for(cfg), cfg, tracker, checkpoints=False)
    assert results["steps"] == 2
    store = RunStore(tracker.run_dir)
    assert store.events("video") == [] and steps_of(store, "val/loss") == [0, 2]


def test_the_run_config_records_the_values_the_run_used_and_no_default_it_did_not() -> None:
    """Store, TensorBoard and W&B used to show TrackingConfig's defaults (lr 0.001, batch 32, 100 epochs)."""
    cfg = TrainConfig(**TINY, max_steps=2, eval_every=2, lr=2e-3, epochs=4, device="cpu")
    with tracker_for("used", use_wandb=True, wandb_mode="offline") as tracker:
        train(build_model_for(cfg), cfg, tracker, checkpoints=False)
        run_dir = tracker.run_dir
    config = RunStore(run_dir).config()
    assert not {"learning_rate", "batch_size", "max_epochs", "log_frequency", "save_frequency", "device"} & \
        set(config)
    used = config["train"]
    assert (used["lr"], used["batch_size"], used["epochs"], used["device"], used["total_steps"]) == \
        (2e-3, 4, 4, "cpu", 2)
    texts = {tag: tensorboard_accumulator(run_dir).Tensors(tag)[0].tensor_proto.string_val[0].decode()
             for tag in ("config", "config/train")}
    assert "learning_rate" not in texts["config"] and "max_epochs" not in texts["config"]
    # Markdown cells escape inline punctuation (dad3e1f): TensorBoard renders `batch\_size` as batch_size.
    assert "| lr | 0.002 |" in texts["config/train"] and "| batch\\_size | 4 |" in texts["config/train"]
    wandb_config = read_wandb_run(run_dir)["config"]
    assert "learning_rate" not in wandb_config and "max_epochs" not in wandb_config
    assert wandb_config["train"]["lr"] == 2e-3 and wandb_config["train"]["batch_size"] == 4
    # One copy of the recipe: the hyperparameters hold it under the same `train` key as the run config (W&B's
    # config had it twice, flat `lr`, `batch_size`, ... beside `train.lr`, ...), and HParams compares on it.
    assert not {"lr", "batch_size", "epochs", "total_steps", "device", "model"} & set(wandb_config)
    assert wandb_config["train"] == used and wandb_config["num_parameters"] > 0
    start = plugin_data_pb2.HParamsPluginData.FromString(tensorboard_accumulator(run_dir).PluginTagToContent(
        "hparams")["_hparams_/session_start_info"]).session_start_info
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert (hparams["train/lr"], hparams["train/batch_size"], hparams["train/total_steps"]) == (2e-3, 4, 2)
    assert "lr" not in hparams and hparams["model_config/width"] == 16


def test_a_recipe_setting_given_to_the_tracker_is_used_or_an_error_never_ignored() -> None:
    cfg = TrainConfig(**TINY, max_steps=2, eval_every=2)
    with tracker_for("conflict", learning_rate=0.5) as tracker, pytest.raises(
            ValueError, match=r"TrackingConfig.learning_rate=0.5 conflicts with TrainConfig.lr=0.002"):
        train(build_model_for(cfg), cfg, tracker)
    with tracker_for("device-conflict", device="cuda:3") as tracker, pytest.raises(
            ValueError, match=r"TrackingConfig.device: expected an available device, received 'cuda:3'"):
        train(build_model_for(cfg), cfg, tracker)
    tracking = TrackingConfig(experiment_name="train-test", run_name="applied", use_wandb=False,
                              learning_rate=0.5, batch_size=2, max_epochs=3, device="cpu")
    recipe = {k: v for k, v in TINY.items() if k != "batch_size"}
    applied = TrainConfig.from_dict({**recipe, "max_steps": 2, "eval_every": 2, "log_every": 1}, tracking=tracking)
    assert (applied.lr, applied.batch_size, applied.epochs, applied.device) == (0.5, 2, 3, "cpu")
    with AdvancedExperimentTracker(tracking) as tracker:
        train(build_model_for(applied), applied, tracker, checkpoints=False)
    store = RunStore(tracker.run_dir)
    assert store.history("train/learning_rate")[0][2] == pytest.approx(0.5)  # 1 warmup step of 2, to the peak
    assert store.config()["learning_rate"] == 0.5 == store.config()["train"]["lr"]
    with pytest.raises(ValueError, match=r"TrainConfig.lr=0.1 conflicts with TrackingConfig.learning_rate=0.5"):
        TrainConfig.from_dict({"lr": 0.1}, tracking=tracking)
