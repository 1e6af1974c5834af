"""The training and evaluation recipe the scripts share: AdamW, warmup + cosine, clipping, AMP, eval, samples.

`train` runs a frame-prediction model (see `build_model_for`) on clips of `context_frames + future_frames`
frames and records everything through an `AdvancedExperimentTracker`: the step losses, gradient norms and
learning rate; periodic evaluations with the video metrics; sample clips (generated above ground truth);
checkpoints (the tracker's manager keeps the latest and the best); and it resumes from the latest checkpoint.

Example:
    >>> from models.training import TrainConfig, build_model_for, train
    >>> cfg = TrainConfig(model="transformer", max_steps=300)
    >>> with AdvancedExperimentTracker(TrackingConfig(experiment_name="demo")) as tracker:  # doctest: +SKIP
    ...     results = train(build_model_for(cfg), cfg, tracker)   # {"val/loss": ..., "video/psnr": ...}
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import random
import re
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from models import MODELS, FramePredictor, ModelName, model_config
from opusclip_track.checkpoint import CheckpointNotFoundError
from opusclip_track.config import SEED_API_FIELDS, TrackingConfig
from opusclip_track.data import Background, SyntheticVideoDataset
from opusclip_track.metrics import MetricName, VideoMetrics, available_metrics
from opusclip_track.metrics.collection import check_metric_names
from opusclip_track.metrics.names import PER_FRAME_TABLE, per_frame_table
from opusclip_track.system import ThroughputMeter
from opusclip_track.tracker import AdvancedExperimentTracker

FVD_FRAMES = 16  # FVD's I3D is defined on 16-frame clips
WatchOption = Literal["gradients", "parameters", "all", "none"]


@dataclass
class TrainConfig:
    """Every setting of a training run; scripts expose these as command-line flags.

    A step is one optimiser update on `batch_size` clips; an epoch is one pass over the training clips.
    """

    model: ModelName = "video_generation"
    model_options: dict[str, Any] = field(default_factory=dict)  # extra config fields, e.g. {"width": 48}
    # data: synthetic bouncing shapes unless `train(..., train_data=...)` is given
    context_frames: int = 4
    future_frames: int = 12
    image_size: int = 64
    background: Background = "none"
    train_clips: int = 2048
    val_clips: int = 64
    num_workers: int = 0
    # optimisation
    epochs: int = 1
    max_steps: int | None = None  # stop after this many steps, even mid-epoch
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max total gradient norm; 0 disables clipping (the norm is still logged)
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # mixed precision on CUDA (bfloat16, else float16 with loss scaling); ignored on CPU
    # tracking
    log_every: int = 10
    eval_every: int = 200  # evaluations also run before the first step and after the last
    sample_clips: int = 4
    sample_fps: float = 8.0
    metrics: tuple[MetricName, ...] = ("psnr", "ssim", "flicker", "lpips", "fid", "fvd")
    weights_dir: str | None = None  # searched first for LPIPS/FID/FVD weights
    resume: bool = False  # continue from the tracker's latest checkpoint of this run
    # `tracker.watch(model, log=watch, log_freq=watch_every)`: grad/* norms, NaN/Inf counts and the Histograms tab
    # every `watch_every` steps (None: every `eval_every`, at the evaluations' steps; a run shorter than that is
    # watched once, at its last step, where its last evaluation runs). Under fp16 AMP the gradients
    # are recorded scaled by the GradScaler's loss scale (train/grad_norm is the unscaled norm).
    watch: WatchOption = "gradients"
    watch_every: int | None = None

    # The names researchers bring (TrackingConfig's original API, W&B sweeps) -> the field they set. The recipe
    # saves a checkpoint at every evaluation, so a checkpoint frequency sets `eval_every`.
    ALIASES: ClassVar[dict[str, str]] = {"learning_rate": "lr", "max_epochs": "epochs", "log_frequency": "log_every",
                                         "save_frequency": "eval_every"}

    def __post_init__(self) -> None:
        positive = ("context_frames", "future_frames", "image_size", "train_clips", "val_clips", "epochs",
                    "batch_size", "log_every", "eval_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name}: expected an int >= 1, received {value!r}")
        for name in ("max_steps", "watch_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"TrainConfig.{name}: expected None or an int >= 1, received {value!r}")
        if self.watch not in typing.get_args(WatchOption):
            raise ValueError(f"TrainConfig.watch: expected one of {typing.get_args(WatchOption)}, "
                             f"received {self.watch!r}")
        for name in ("lr", "weight_decay", "grad_clip", "warmup_steps", "min_lr_ratio", "sample_clips",
                     "sample_fps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"TrainConfig.{name}: expected a finite number >= 0, received {value!r}")
        self.metrics = check_metric_names(self.metrics, name="TrainConfig.metrics")
        if self.model not in MODELS:
            raise ValueError(f"TrainConfig.model: expected one of {sorted(MODELS)}, received {self.model!r}")
        _parse_device(self.device, "TrainConfig.device")

    @classmethod
    def resolve_aliases(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """`data` with every alias (`ALIASES`, e.g. `learning_rate`) renamed to its field (`lr`).

        Raises:
            ValueError: for a key that is neither a field nor an alias (the message lists both), or for an
                alias given together with its field.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"TrainConfig: expected a mapping of settings, received {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in fields and k not in cls.ALIASES)
        if unknown:
            known = sorted(fields) + sorted(cls.ALIASES)
            guesses = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
            hint = "".join(f"; {k!r}: did you mean {g[0]!r}?" for k, g in guesses.items() if g)
            raise ValueError(f"TrainConfig: unknown setting(s) {unknown}{hint}; expected some of {sorted(fields)} "
                             f"or the aliases {sorted(cls.ALIASES)}")
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = cls.ALIASES.get(key, key)
            if name in out:  # the alias is whichever of the two keys is not the field's own name
                alias = key if key != name else next(k for k in data if k != name and cls.ALIASES.get(k) == name)
                raise ValueError(f"TrainConfig: {alias!r} is an alias of {name!r}; received both, give one")
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tracking: TrackingConfig | None = None) -> TrainConfig:
        """Build from a mapping that may use the aliases in `ALIASES` (`learning_rate`, `max_epochs`, ...).

        Args:
            data: Settings by field name or alias; a list of metrics (as YAML gives) is accepted.
            tracking: A `TrackingConfig` whose recipe fields (`learning_rate`, `batch_size`, ...) are applied
                where set; one that `data` sets to another value raises `ValueError` naming both.

        Example:
            >>> TrainConfig.from_dict({"learning_rate": 3e-4, "max_epochs": 2}).lr
            0.0003
        """
        settings = cls.resolve_aliases(data)
        for name, value in (tracking_settings(tracking) if tracking is not None else {}).items():
            if name in settings and settings[name] != value:
                raise ValueError(f"TrainConfig.{name}={settings[name]!r} conflicts with TrackingConfig."
                                 f"{_TRACKING_NAMES[name]}={value!r}; set one of them")
            settings[name] = value
        if isinstance(settings.get("metrics"), list):
            settings["metrics"] = tuple(settings["metrics"])
        return cls(**settings)

    @property
    def clip_frames(self) -> int:
        return self.context_frames + self.future_frames


# TrainConfig field -> the TrackingConfig field (original API) that sets it.
_TRACKING_NAMES = {TrainConfig.ALIASES.get(name, name): name for name in SEED_API_FIELDS}


def tracking_settings(tracking: TrackingConfig) -> dict[str, Any]:
    """The recipe settings `tracking` sets (its original-API fields that are not None), by TrainConfig name.

    Example:
        >>> tracking_settings(TrackingConfig(experiment_name="x", learning_rate=0.5, batch_size=16))
        {'lr': 0.5, 'batch_size': 16}
    """
    return {train_name: getattr(tracking, name) for train_name, name in _TRACKING_NAMES.items()
            if getattr(tracking, name) is not None}


def model_config_for(cfg: TrainConfig) -> Any:
    """The checked config of the model `cfg` names, with its frame counts and size and `cfg.model_options`
    (`models.model_config`: a value the model cannot take raises `ValueError` naming it; nothing is built)."""
    return model_config(cfg.model, context_frames=cfg.context_frames, future_frames=cfg.future_frames,
                        image_size=cfg.image_size, **cfg.model_options)


def build_model_for(cfg: TrainConfig) -> FramePredictor:
    """The model `cfg` names (`model_config_for`), initialised from `cfg.seed` (the same config always starts
    from the same weights)."""
    torch.manual_seed(cfg.seed)
    return MODELS[cfg.model][1](model_config_for(cfg))


# ---------------------------------------------------------------------------------------------------------
# evaluation


def evaluate(model: FramePredictor, loader: DataLoader[Tensor] | list[Tensor], *,
             metrics: tuple[MetricName, ...] = ("psnr", "ssim"), device: str | torch.device | None = None,
             weights_dir: str | None = None, amp: bool = False) -> dict[str, float]:
    """Predict the future of every clip in `loader` and score it against the real future.

    PSNR, SSIM, LPIPS, flicker and FID compare the predicted frames with the true future frames; FVD, defined
    on 16-frame clips, compares context + prediction with the whole clip (the usual video-prediction
    protocol, as on BAIR) and needs `context_frames + future_frames >= 16`.

    Args:
        model: A `FramePredictor`; its mode is restored afterwards.
        loader: Batches `(B, T, C, H, W)` in [0, 1] with T >= context_frames + future_frames.
        metrics: Video metrics to compute (learned ones need their weights, see `available_metrics`).
        device: Where to run; default: where the model's parameters are.
        weights_dir: Searched first for pretrained weights.
        amp: Autocast the model on CUDA.

    Returns:
        `{"val/loss": mean squared error, "video/psnr": ..., ...}`.
    """
    return _evaluate(model, loader, metrics=metrics, device=device, weights_dir=weights_dir, amp=amp)[0]


@torch.no_grad()
def _evaluate(model: FramePredictor, loader: DataLoader[Tensor] | list[Tensor], *, metrics: tuple[MetricName, ...],
              device: str | torch.device | None, weights_dir: str | None,
              amp: bool) -> tuple[dict[str, float], dict[str, list[float]]]:
    """`evaluate`'s numbers, and the per-frame curves of PSNR/SSIM/LPIPS (`{"video/psnr": [one per future
    frame]}`, mean over clips; empty when none of them is computed)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    t_ctx, t_future = model.config.context_frames, model.config.future_frames
    frame_names = tuple(m for m in metrics if m != "fvd")
    if "fvd" in metrics and t_ctx + t_future < FVD_FRAMES:
        raise ValueError(f"metrics: 'fvd' needs clips of >= {FVD_FRAMES} frames, the model's "
                         f"context_frames + future_frames is {t_ctx + t_future}")
    frame_metrics = VideoMetrics(frame_names, weights_dir=weights_dir, device=device) if frame_names else None
    clip_metrics = (VideoMetrics(("fvd",), weights_dir=weights_dir, device=device) if "fvd" in metrics
                    else None)
    was_training = model.training
    model.eval()
    squared_error, count = torch.zeros((), device=device, dtype=torch.float64), 0
    try:
        for batch in loader:
            clip = batch.to(device)[:, :t_ctx + t_future]  # (B, T, C, H, W)
            with _autocast(device, amp):
                prediction = model(clip[:, :t_ctx]).float()  # (B, T_future, C, H, W)
            future = clip[:, t_ctx:]
            squared_error += F.mse_loss(prediction, future, reduction="sum").double()
            count += future.numel()
            if frame_metrics is not None:
                frame_metrics.update(prediction, future)
            if clip_metrics is not None:
                clip_metrics.update(torch.cat([clip[:, :t_ctx], prediction], dim=1), clip)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("loader: expected at least one batch to evaluate, received none")
    results = {"val/loss": float(squared_error) / count}
    for collection in (frame_metrics, clip_metrics):
        if collection is not None:
            results.update(collection.compute())
    curves = {key: curve.tolist() for key, curve in frame_metrics.compute_curves().items()} if frame_metrics else {}
    return results, curves


def split_available_metrics(wanted: tuple[MetricName, ...],
                            weights_dir: str | None = None) -> tuple[tuple[MetricName, ...], dict[str, str]]:
    """`(metrics that can run here, {skipped metric: why})`, looking only on disk for weights."""
    status = available_metrics(weights_dir)
    runnable = tuple(m for m in wanted if status[m] is None)
    return runnable, {m: str(status[m]) for m in wanted if status[m] is not None}


def describe_skipped(skipped: dict[str, str]) -> str:
    """One line saying which metrics are skipped and why (the weights file each one lacks)."""
    parts = []
    for name, reason in skipped.items():
        missing = re.search(r"weights file '([^']+)'", reason)
        parts.append(f"{name} (weights file {missing.group(1)} not found)" if missing
                     else f"{name} ({reason.splitlines()[0]})")
    hint = ("; pass weights_dir=, set OPUSCLIP_WEIGHTS_DIR or run `opusclip-track weights download <name>`"
            if any("weights file" in r for r in skipped.values()) else "")
    return f"metrics: skipped {', '.join(parts)}{hint}"


# ---------------------------------------------------------------------------------------------------------
# training


def train(model: FramePredictor, cfg: TrainConfig, tracker: AdvancedExperimentTracker, *,
          train_data: Dataset[Tensor] | None = None, val_data: Dataset[Tensor] | None = None,
          checkpoints: bool = True, progress: bool | str = False) -> dict[str, float]:
    """Train `model` by `cfg`, logging to `tracker`; returns the final evaluation and training numbers.

    Args:
        model: A `FramePredictor` whose frame counts and size match `cfg` (`build_model_for(cfg)`).
        cfg: The recipe.
        tracker: Receives `train/*` every `log_every` steps, `val/loss` and `video/*` at every evaluation with
            the per-frame quality table `video/per_frame` (PSNR/SSIM/LPIPS per future frame), sample clips under
            `samples/prediction`, hyperparameters, the architecture and checkpoints; its
            run config gets `train`: the recipe as it runs (resolved device, `total_steps`, ...). A recipe
            field its TrackingConfig sets (`learning_rate`, `batch_size`, ...) must equal `cfg`'s, else
            `ValueError` (`TrainConfig.from_dict(data, tracking=...)` applies them).
        train_data, val_data: Datasets of `(T, C, H, W)` clips in [0, 1] (e.g. `VideoFolderDataset`);
            default: synthetic bouncing shapes of `train_clips` / `val_clips` clips (different seeds).
        checkpoints: Save a checkpoint at every evaluation after the start (the tracker's manager keeps
            the best by its `checkpoint_monitor`, e.g. `val/loss`).
        progress: Show a progress bar over the training steps (with the last evaluation's numbers) on stderr;
            a string labels the bar (default label: "train").

    Returns:
        The last evaluation (`val/loss`, `video/psnr`, ...), `train/loss` (mean over the last `log_every`
        steps), `val/best_loss` and `best_step` (of this session's evaluations), `steps`, `train_time_s`.
    """
    _check_model_matches(model, cfg)
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    _check_tracking_agrees(cfg, tracker.config, device, checkpoints)
    model.to(device)
    train_data = train_data if train_data is not None else _synthetic(cfg, cfg.train_clips, cfg.seed)
    val_data = val_data if val_data is not None else _synthetic(cfg, cfg.val_clips, cfg.seed + 1)
    steps_per_epoch = _num_clips(train_data, "train_data") // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train_data: expected at least batch_size={cfg.batch_size} clips, "
                         f"received {_num_clips(train_data, 'train_data')}")
    total_steps = min(cfg.epochs * steps_per_epoch, cfg.max_steps or cfg.epochs * steps_per_epoch)
    metrics = _metrics_to_compute(cfg)

    optimizer = _make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(cfg, total_steps))
    amp_dtype = _amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    start_step = _resume(tracker, model, optimizer, scheduler, scaler) if cfg.resume else 0
    val_loader = DataLoader(val_data, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    num_samples = min(cfg.sample_clips, _num_clips(val_data, "val_data"))
    samples = torch.stack([val_data[i] for i in range(num_samples)]) if num_samples else None  # (S, T, C, H, W)
    used = _settings_used(cfg, device, total_steps, steps_per_epoch, amp_dtype)
    # The values this run uses, beside the tracker's settings (also on resume, when the hyperparameters, the same
    # `train` entry and the model's size, are not logged again).
    tracker.update_config({"train": used})
    if start_step == 0:
        tracker.log_hyperparameters(_hyperparameters(used, model, metrics))
        tracker.log_model_architecture(model)

    def run_eval(step: int) -> dict[str, float]:
        results, curves = _evaluate(model, val_loader, metrics=metrics, device=device, weights_dir=cfg.weights_dir,
                                    amp=amp_dtype is not None)
        tracker.log_metrics(results, step=step)
        if curves:  # quality against generated-frame index: where along the horizon the prediction collapses
            tracker.log_table(f"video/{PER_FRAME_TABLE}", *per_frame_table(curves), step=step)
        if samples is not None:
            _log_samples(tracker, model, samples, cfg, step, device)
        if checkpoints and step > 0:
            tracker.save_checkpoint(model, optimizer, scheduler, epoch=(step - 1) // steps_per_epoch,
                                    metrics=results, step=step,
                                    scaler=scaler if scaler.is_enabled() else None,
                                    extra={"train_config": _plain(dataclasses.asdict(cfg))})
        return results

    results = run_eval(0) if start_step == 0 else {}
    best = {"val/best_loss": results.get("val/loss", math.inf), "best_step": 0.0}
    window: list[Tensor] = []  # step losses since the last log, kept on the device (read when logged)
    logged_loss = torch.tensor(math.nan)
    step, start = start_step, time.perf_counter()
    model.train()
    bar = tqdm(total=total_steps, initial=start_step, desc=progress if isinstance(progress, str) else "train",
               unit="step", disable=not progress, dynamic_ncols=True)
    meter = ThroughputMeter(window=cfg.log_every)  # perf/samples_per_s, perf/frames_per_s, perf/step_time_s
    meter.reset()
    # Hooks on the model record its statistics every watch_every backward passes; the loop calls nothing for it.
    watching = cfg.watch != "none" and start_step < total_steps
    if watching:
        tracker.watch(model, log=None if cfg.watch == "none" else cfg.watch,
                      log_freq=cfg.watch_every or min(cfg.eval_every, total_steps - start_step))
    try:
        for step, batch in _batches(train_data, cfg, steps_per_epoch, start_step, total_steps):
            bar.update(1)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it on after)
            loss, grad_norm = _train_step(model, batch.to(device, non_blocking=True), optimizer, scheduler,
                                          scaler, cfg.grad_clip, amp_dtype)
            window.append(loss)
            throughput = meter.update(batch.shape[0], num_frames=batch.shape[0] * batch.shape[1])
            if step % cfg.log_every == 0 or step == total_steps:
                tracker.log_metrics(throughput, step=step)
                logged_loss, window = torch.stack(window).mean(), []
                tracker.log_training_step(logged_loss, grad_norm=grad_norm, step=step, learning_rate=lr,
                                          clipped=(grad_norm > cfg.grad_clip).float() if cfg.grad_clip else None)
            if step % cfg.eval_every == 0 or step == total_steps:
                results = run_eval(step)
                bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in results.items()}, refresh=False)
                if results["val/loss"] < best["val/best_loss"]:
                    best = {"val/best_loss": results["val/loss"], "best_step": float(step)}
    finally:
        if watching:  # the last statistics taken are logged now, and the hooks leave the model
            tracker.unwatch(model)
    bar.close()
    elapsed = time.perf_counter() - start
    tracker.log_metrics({**best, "train/time_s": elapsed}, step=step)
    tracker.flush()
    return {**results, "train/loss": float(logged_loss), **best, "steps": float(step),
            "train_time_s": elapsed}


def _metrics_to_compute(cfg: TrainConfig) -> tuple[MetricName, ...]:
    """The metrics of `cfg` that can run here; prints one line naming the others and why."""
    metrics, skipped = split_available_metrics(cfg.metrics, cfg.weights_dir)
    if "fvd" in metrics and cfg.clip_frames < FVD_FRAMES:
        metrics = tuple(m for m in metrics if m != "fvd")
        skipped["fvd"] = f"it needs clips of >= {FVD_FRAMES} frames, these have {cfg.clip_frames}"
    if skipped:
        print(describe_skipped(skipped))
    return metrics


def _num_clips(data: Dataset[Tensor], name: str) -> int:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError as err:
        raise TypeError(f"{name}: expected a map-style Dataset with a length, received "
                        f"{type(data).__name__}") from err


def _train_step(model: FramePredictor, clip: Tensor, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                grad_clip: float, amp_dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
    """One update; returns the loss and the gradient norm before clipping as device tensors (no sync)."""
    with _autocast(clip.device, amp_dtype is not None, amp_dtype):
        loss = model.loss(clip)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach().float(), grad_norm.detach()


def _batches(data: Dataset[Tensor], cfg: TrainConfig, steps_per_epoch: int, done: int,
             total_steps: int) -> Iterator[tuple[int, Tensor]]:
    """`(step, batch)` from step `done + 1` to `total_steps`; epoch e is shuffled by seed + e, so a resumed
    run sees exactly the batches an uninterrupted one would have."""
    step = done
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        shuffle = torch.Generator().manual_seed(cfg.seed + epoch)
        order = torch.randperm(_num_clips(data, "train_data"), generator=shuffle)
        rest = order[skip * cfg.batch_size: steps_per_epoch * cfg.batch_size].tolist()
        loader = DataLoader(Subset(data, rest), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                            pin_memory=torch.cuda.is_available(), drop_last=True)
        for batch in loader:
            step += 1
            yield step, batch
            if step >= total_steps:
                return


@torch.no_grad()
def _log_samples(tracker: AdvancedExperimentTracker, model: FramePredictor, clips: Tensor, cfg: TrainConfig,
                 step: int, device: torch.device) -> None:
    """Context + prediction above the real clip, one column per sample clip."""
    was_training = model.training
    model.eval()
    clips = clips.to(device)[:, :cfg.clip_frames]
    context = clips[:, :cfg.context_frames]
    predicted = torch.cat([context, model.generate(context, cfg.future_frames).float()], dim=1)
    model.train(was_training)
    caption = f"top: {cfg.context_frames} real frames then the prediction; bottom: the real clip"
    tracker.log_video(predicted.cpu(), "samples/prediction", step=step, fps=cfg.sample_fps,
                      reference=clips.cpu(), caption=caption)


# ---------------------------------------------------------------------------------------------------------
# helpers


def _check_model_matches(model: FramePredictor, cfg: TrainConfig) -> None:
    mcfg = model.config
    for name in ("context_frames", "future_frames", "image_size"):
        if getattr(mcfg, name) != getattr(cfg, name):
            raise ValueError(f"model: expected {name}={getattr(cfg, name)} as in the TrainConfig, received a "
                             f"model with {name}={getattr(mcfg, name)} (build it with build_model_for(cfg))")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def _parse_device(name: str, field_name: str) -> torch.device | None:
    """The device `name` means (None for "auto"), without asking whether it is here."""
    if name == "auto":
        return None
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{field_name}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', received {name!r}") from err


def resolve_device(name: str, field_name: str = "TrainConfig.device") -> torch.device:
    """The torch device `name` ("auto": CUDA when available, else CPU) names, if this machine has it.

    Raises:
        ValueError: naming `field_name`, for a malformed name or a CUDA device this machine does not have.
    """
    device = _parse_device(name, field_name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            here = f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
            raise ValueError(f"{field_name}: expected an available device, received {name!r} (torch finds "
                             f"{here}; 'auto' uses CUDA when there is one, else the CPU)")
    return device


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, enabled: bool, dtype: torch.dtype | None = None) -> Any:
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype or _amp_dtype(device, True))


def _make_optimizer(model: FramePredictor, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; as in nanoGPT, matrices and conv kernels decay, biases, norms and embeddings do not."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "pos_" not in n]
    ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=device.type == "cuda")


def _warmup_cosine(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """LR multiplier of step index s (0-based): linear warmup up to 1 at s = warmup - 1, then a cosine that
    reaches `min_lr_ratio` at the last step, s = total_steps - 1."""
    warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step + 1 - warmup) / max(total_steps - warmup, 1), 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _resume(tracker: AdvancedExperimentTracker, model: FramePredictor, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: torch.amp.GradScaler) -> int:
    """Restore the run's latest checkpoint; the step to continue after (0 when there is none)."""
    try:
        loaded = tracker.load_checkpoint("latest", model, optimizer, scheduler,
                                         scaler if scaler.is_enabled() else None)
    except CheckpointNotFoundError:
        print(f"resume: no checkpoint of run {tracker.run_name!r} yet, starting from step 0")
        return 0
    print(f"resume: continuing run {tracker.run_name!r} after step {loaded.step} ({loaded.path.name})")
    return loaded.step


def _synthetic(cfg: TrainConfig, num_clips: int, seed: int) -> SyntheticVideoDataset:
    return SyntheticVideoDataset(num_clips=num_clips, num_frames=cfg.clip_frames, size=cfg.image_size,
                                 background=cfg.background, seed=seed)


def _plain(value: Any) -> Any:
    """Tuples to lists, for config values stored in checkpoints and hyperparameters."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _settings_used(cfg: TrainConfig, device: torch.device, total_steps: int, steps_per_epoch: int,
                   amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """The recipe as it runs: `cfg` with the device resolved, plus the step counts and the AMP dtype."""
    return {**_plain(dataclasses.asdict(cfg)), "device": str(device), "total_steps": int(total_steps),
            "steps_per_epoch": steps_per_epoch, "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype
            else None}


def _check_tracking_agrees(cfg: TrainConfig, tracking: TrackingConfig, device: torch.device,
                           checkpoints: bool) -> None:
    """A recipe field set in the TrackingConfig must be the value this run uses: never recorded and ignored."""
    for name, value in tracking_settings(tracking).items():
        used = getattr(cfg, name)
        if name == "device":
            agrees = _same_device(resolve_device(value, "TrackingConfig.device"), device)
        elif name == "eval_every" and not checkpoints:
            raise ValueError(f"TrackingConfig.save_frequency={value!r}: expected None, since train(..., "
                             f"checkpoints=False) saves no checkpoint")
        else:
            agrees = used == value
        if not agrees:
            raise ValueError(f"TrackingConfig.{_TRACKING_NAMES[name]}={value!r} conflicts with TrainConfig."
                             f"{name}={used!r}, which this run would use; set one of them (TrainConfig.from_dict"
                             f"(data, tracking=...) applies the TrackingConfig's)")


def _same_device(a: torch.device, b: torch.device) -> bool:
    """`cuda` and `cuda:0` are the same device when the current device is 0."""
    def index(d: torch.device) -> int | None:
        return d.index if d.index is not None or d.type != "cuda" else torch.cuda.current_device()
    return a.type == b.type and index(a) == index(b)


def _hyperparameters(used: dict[str, Any], model: FramePredictor, metrics: tuple[str, ...]) -> dict[str, Any]:
    """The recipe under `train`, as the run config holds it, so W&B's config (where hyperparameters and the run
    config meet) and MLflow's params keep one copy of it; TensorBoard's HParams shows it as `train/lr`, ..."""
    model_config = dataclasses.asdict(model.config)  # type: ignore[call-overload]
    return {"train": used, "model_config": model_config, "num_parameters": model.num_parameters(),
            "metrics_computed": list(metrics)}
