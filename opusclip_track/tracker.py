"""`AdvancedExperimentTracker`: the facade a training or generation loop calls, and nothing else.

The logging itself (every `log_*` of given values, the step, flush, close) is `TrackerCore` (`_tracker_core.py`);
this class adds what computes before it logs: video-quality metrics, system samples, training diagnostics and
checkpoints. The records go to the run writer (`_writer.py`), which owns the store's worker and one worker per
backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import torch

from ._lifecycle import describe
from ._tracker_core import TrackerCore
from .checkpoint import CheckpointInfo, CheckpointManager, LoadedCheckpoint
from .config import TrackingConfig
from .diagnostics import ModelWatcher, model_architecture_summary, trace_graph, training_step_metrics
from .distributed import rank_zero_only
from .metrics.names import PER_FRAME_TABLE, per_frame_table
from .records import Artifact, Rewind
from .system import SystemMonitor

log = logging.getLogger("opusclip_track")


class AdvancedExperimentTracker(TrackerCore):
    """Async experiment tracker: local SQLite store + TensorBoard + Weights & Biases (+ MLflow, ...).

    Args:
        config: the run's settings; keyword arguments build one when omitted
            (`AdvancedExperimentTracker(experiment_name="vgen")`).

    Only global rank 0 writes: on other ranks every `log_*` method is a no-op, so a script runs unchanged
    under `torchrun`.

    Example:
        >>> cfg = TrackingConfig(experiment_name="vgen", use_wandb=False)      # doctest: +SKIP
        >>> with AdvancedExperimentTracker(cfg) as tracker:                   # doctest: +SKIP
        ...     for step, batch in enumerate(loader):
        ...         loss = train_step(batch)
        ...         tracker.log_metrics({"train/loss": loss}, step=step)      # a CUDA tensor is fine
    """

    def __init__(self, config: TrackingConfig | None = None, **kwargs: Any) -> None:
        self._monitor: SystemMonitor | None = None
        self._watchers: list[ModelWatcher] = []
        self._checkpoints: CheckpointManager | None = None
        super().__init__(config, **kwargs)

    @rank_zero_only
    def _start(self) -> None:
        super()._start()
        if self.config.system_monitor_interval_s > 0:
            self._monitor = SystemMonitor(self._log_now, self.config.system_monitor_interval_s).start()

    def _before_close(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
        if self._checkpoints is not None:
            try:
                self._checkpoints.close()  # pending async writes finish before the artifact is logged
                self._log_best_checkpoint_artifact()
            except Exception as exc:
                log.error("opusclip-track: finishing the checkpoints of run %s failed (%s: %s)", self.run_name,
                          type(exc).__name__, exc)

    # ---- video-quality metrics ---------------------------------------------------------------------
    def log_video_metrics(self, psnr: Any = None, ssim: Any = None, lpips: Any = None, fid: Any = None, *,
                          inception_score: Any = None, fvd: Any = None, step: int | None = None,
                          **others: Any) -> None:
        """Log video-quality scores under `video/` (the original API); None values are left out.

        Example:
            >>> tracker.log_video_metrics(psnr=28.1, ssim=0.91, lpips=0.12, step=500)  # doctest: +SKIP
        """
        named = {"psnr": psnr, "ssim": ssim, "lpips": lpips, "fid": fid, "is": inception_score, "fvd": fvd,
                 **others}
        values = {f"video/{k}": v for k, v in named.items() if v is not None}
        if not values:
            raise ValueError("log_video_metrics: expected at least one score, received only None")
        self.log_metrics(values, step=self._current_step(step))

    def evaluate_videos(self, generated: torch.Tensor, reference: torch.Tensor, step: int | None = None,
                        metrics: Sequence[str] = ("psnr", "ssim", "flicker"), *,
                        value_range: tuple[float, float] = (0.0, 1.0), weights_dir: str | Path | None = None,
                        prefix: str = "video") -> dict[str, float]:
        """Compute video-quality metrics of `generated` against `reference` and log them.

        Also logs the per-timestep PSNR/SSIM curve as a table (`<prefix>/per_frame`) and stores the metric
        protocol (resolution, frames, value range, weights files) in the run config, so numbers are
        comparable across runs. Runs in the caller's thread: it is the computation you asked for.

        Args:
            generated, reference: `(B, T, C, H, W)` or `(T, C, H, W)`, uint8 or float in `value_range`.
            step: defaults to the current step.
            metrics: names out of psnr, ssim, lpips, fid, is, fvd, flicker.
            value_range: range of float input.
            weights_dir: where pretrained weights are looked for first (LPIPS, FID, IS, FVD).
            prefix: key prefix of the logged values.

        Returns:
            `{"<prefix>/psnr": ..., ...}` as logged.
        """
        from .metrics import VideoMetrics

        evaluator = VideoMetrics(metrics, value_range=value_range, weights_dir=weights_dir)  # type: ignore[arg-type]
        evaluator.update(generated, reference)
        results = {f"{prefix}/{k.removeprefix('video/')}": v for k, v in evaluator.compute().items()}
        self._log_evaluation(evaluator, results, self._current_step(step), prefix)
        return results

    @rank_zero_only
    def _log_evaluation(self, evaluator: Any, results: dict[str, float], step: int, prefix: str) -> None:
        self.log_metrics(results, step=step)
        curves = {key: curve.tolist() for key, curve in evaluator.compute_curves().items()}
        if curves:
            self.log_table(f"{prefix}/{PER_FRAME_TABLE}", *per_frame_table(curves), step=step)
        self.update_config({f"{prefix}_metric_protocol": evaluator.protocol()})

    # ---- system and training diagnostics ------------------------------------------------------------
    def get_system_status(self) -> dict[str, float]:
        """A system sample now (CPU, memory, disk/network rates, GPUs when present), not logged."""
        if self._monitor is None:
            self._monitor = SystemMonitor(self._log_now, interval_s=max(self.config.system_monitor_interval_s, 1.0))
        return self._monitor.sample()

    def log_performance_metrics(self) -> dict[str, float]:
        """Record a system sample now at the current step (the original API) and return it."""
        sample = self.get_system_status()
        self._log_now(sample)
        return sample

    @rank_zero_only
    def log_training_step(self, loss: Any, *, grad_norm: Any = None, learning_rate: Any = None,
                          nan_count: Any = None, inf_count: Any = None, clipped: Any = None,
                          step: int | None = None) -> None:
        """Log one optimisation step's loss and stability numbers, plus `watch`ed model statistics.

        Values may be 0-d device tensors (resolved on the worker). On steps where a watched model is due
        (`step % log_freq == 0`), its gradient/weight norms, NaN/Inf counts and histograms are logged too.
        """
        metrics = training_step_metrics(loss, grad_norm=grad_norm, learning_rate=learning_rate,
                                        nan_count=nan_count, inf_count=inf_count, clipped=clipped)
        self.log_metrics(metrics, step)
        at = self._step if step is None else step
        for watcher in self._watchers:
            collected = watcher.maybe_collect(at)
            if collected is not None:
                scalars, histograms = collected
                self.log_metrics(scalars, step=at)
                for name, values in histograms.items():
                    self.log_histogram(name, values, step=at)

    def watch(self, model: torch.nn.Module, log: Literal["gradients", "parameters", "all"] = "gradients",
              log_freq: int = 100) -> ModelWatcher:
        """Record gradient/weight norms, NaN/Inf counts and histograms every `log_freq` training steps.

        Statistics are computed on the device when `log_training_step` runs on a due step; other steps cost
        one modulo. Returns the watcher (its `collect()` gives the numbers directly).
        """
        watcher = ModelWatcher(model, log=log, log_freq=log_freq)
        self._watchers.append(watcher)
        return watcher

    def log_model_architecture(self, model: torch.nn.Module, name: str = "model",
                               graph_input: Any = None) -> dict[str, int]:
        """Log the module tree as text and parameter counts into the run config; returns the counts.

        Args:
            model: the module.
            name: prefix of what is logged (`<name>/architecture`, `<name>_parameters`).
            graph_input: an example input (a tensor or a tuple of them): when given, the model is traced
                (on this thread, once) and its graph shown in TensorBoard's Graphs tab.
        """
        tree, counts = model_architecture_summary(model)
        self.log_text(f"{name}/architecture", f"```\n{tree}\n```")
        self.update_config({f"{name}_parameters": counts})
        if graph_input is not None:
            self._log_graph(name, model, graph_input)
        return counts

    @rank_zero_only
    def _log_graph(self, name: str, model: torch.nn.Module, graph_input: Any) -> None:
        self._check_open()
        self._put(trace_graph(name, model, graph_input), 1 << 16)

    # ---- checkpoints ---------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> CheckpointManager:
        """The run's `CheckpointManager` (`<checkpoint_dir>/<run_name>/`), created on first use."""
        if self._checkpoints is None:
            cfg = self.config
            self._checkpoints = CheckpointManager(
                Path(cfg.checkpoint_dir) / self.run_name, keep_last=cfg.checkpoint_keep_last,
                keep_best=cfg.checkpoint_keep_best, monitor=cfg.checkpoint_monitor, mode=cfg.checkpoint_mode,
                async_save=cfg.async_checkpoint, run_name=self.run_name)
        return self._checkpoints

    def _log_best_checkpoint_artifact(self) -> None:
        """At close, with every write finished: the best checkpoint (the latest one without a monitor) goes to
        every backend as a model artifact with aliases best/latest (W&B and MLflow keep it; the store records
        it; backends without artifacts ignore it)."""
        manager = self._checkpoints
        info = None if manager is None else (manager.best or manager.latest)
        if info is None:
            return
        metadata = {"step": info.step, "epoch": info.epoch, "sha256": info.sha256, **info.metrics}
        self._put(Artifact(f"model-{self.run_name}", info.path, "model", ["best", "latest"], metadata,
                           time.time()), 1024)

    @rank_zero_only
    def save_checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                        scheduler: Any = None, epoch: int = 0, metrics: Mapping[str, Any] | None = None, *,
                        step: int | None = None, scaler: Any = None,
                        extra: dict[str, Any] | None = None) -> CheckpointInfo:
        """Save a verified, atomic checkpoint (the original API) and record the event.

        With `async_checkpoint` (the default) only the copy to CPU memory happens here; the returned info's
        size and sha256 are final once `tracker.checkpoints.wait()` returns. The best checkpoint by
        `checkpoint_monitor` (the latest without one) is sent to every backend as a model artifact with
        aliases `best`/`latest` when the tracker closes (W&B and MLflow keep it).
        """
        self._check_open()
        at = self._current_step(step)
        manager = self.checkpoints
        info = manager.save(model, optimizer, scheduler, scaler, epoch=epoch, step=at,
                            metrics=dict(metrics or {}), extra=extra)
        self._log_now({"checkpoint/epoch": epoch})
        return info

    def load_checkpoint(self, which: str | Path = "latest", model: torch.nn.Module | None = None,
                        optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                        scaler: Any = None) -> LoadedCheckpoint:
        """Load and verify a checkpoint of this run (sha256, `weights_only=True`), restoring what is passed
        and the RNG states; the tracker's step continues after the checkpoint's step.

        Resuming a run (`TrackingConfig(resume=True)`): what was logged after this checkpoint belongs to the
        abandoned trajectory; TensorBoard is told to hide those steps and the store moves them aside, so the
        continued run shows no duplicated or backwards steps.
        """
        loaded = self.checkpoints.load(which, model, optimizer, scheduler, scaler)
        if self.step > loaded.step:
            self.flush()
            self._put(Rewind(loaded.step + 1, time.time()), 64)
            self.flush()
        with self._lock:
            self._step = loaded.step
        return loaded

    def __enter__(self) -> AdvancedExperimentTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """A block that raised (other than `sys.exit(0)`) ends the run as "failed", with the error in its meta."""
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            self._finish("finished", None)
        else:
            self._finish("failed", describe(exc))

    def __repr__(self) -> str:
        return f"AdvancedExperimentTracker(run_name={self.run_name!r}, step={self._step})"
