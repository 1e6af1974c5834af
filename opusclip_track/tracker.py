"""`AdvancedExperimentTracker`: the facade a training or generation loop calls, and nothing else.

The logging itself (every `log_*` of given values, the step, flush, close) is `TrackerCore` (`_tracker_core.py`);
this class adds what computes before it logs: video-quality metrics, system samples, training diagnostics and
checkpoints. The records go to the run writer (`_writer.py`), which owns the store's worker and one worker per
backend.
"""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from ._foreign_names import foreign_name_error
from ._lifecycle import describe
from ._tracker_core import TrackerCore
from .checkpoint import CheckpointBarrier, CheckpointInfo, CheckpointManager, LoadedCheckpoint
from .config import TrackingConfig
from .diagnostics import (
    ModelWatcher,
    Stats,
    WatchMode,
    model_architecture_summary,
    no_backward_message,
    trace_graph,
    training_step_metrics,
    unwrap_model,
)
from .distributed import rank_zero_only, reduce_sum
from .metrics.names import PER_FRAME_TABLE, per_frame_table
from .records import Artifact, Histogram, Rewind, Scalars
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

    if not TYPE_CHECKING:  # type checkers keep reporting unknown attributes themselves

        def __getattr__(self, name: str) -> Any:
            # Only for names normal lookup did not find: W&B's `log`, MLflow's `log_params`, TensorBoard's
            # `add_scalar`, ... get an error naming the call to use here.
            raise foreign_name_error(type(self).__name__, name)

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
        self._close_watchers()  # last watched statistics logged, hooks removed, unreached models reported once
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
        # Under torchrun the metrics reduce over every rank's clips: each rank takes part in every collective
        # (compute, the curves and the clip count) and rank 0 alone logs the shared result.
        results = {f"{prefix}/{k.removeprefix('video/')}": v for k, v in evaluator.compute().items()}
        curves = {key: curve.tolist() for key, curve in evaluator.compute_curves().items()}
        protocol = evaluator.protocol()
        protocol["num_videos"] = int(reduce_sum(torch.tensor(evaluator.num_videos)))
        self._log_evaluation(results, curves, protocol, self._current_step(step), prefix)
        return results

    @rank_zero_only
    def _log_evaluation(self, results: dict[str, float], curves: dict[str, list[float]], protocol: dict[str, Any],
                        step: int, prefix: str) -> None:
        self.log_metrics(results, step=step)
        if curves:
            self.log_table(f"{prefix}/{PER_FRAME_TABLE}", *per_frame_table(curves), step=step)
        self.update_config({f"{prefix}_metric_protocol": protocol})

    # ---- system and training diagnostics ------------------------------------------------------------
    def get_system_status(self) -> dict[str, float]:
        """A system sample now (CPU, memory, disk/network rates, GPUs when present), not logged.

        It samples on any rank that asks (this process and the GPUs it sees); the background monitor
        (`system_monitor_interval_s`) runs on global rank 0 only, which samples its node once for the job.
        """
        if self._monitor is None:
            self._monitor = SystemMonitor(self._log_now, interval_s=max(self.config.system_monitor_interval_s, 1.0))
        return self._monitor.sample()

    @rank_zero_only
    def log_performance_metrics(self) -> dict[str, float] | None:
        """Record a system sample now at the current step (the original API) and return it.

        Global rank 0 only (the node is sampled once, by the process that writes); None on other ranks.
        """
        sample = self.get_system_status()
        self._log_now(sample)
        return sample

    @rank_zero_only
    def log_training_step(self, loss: Any, *, grad_norm: Any = None, learning_rate: Any = None,
                          nan_count: Any = None, inf_count: Any = None, clipped: Any = None,
                          step: int | None = None) -> None:
        """Log one optimisation step's loss and stability numbers under `train/`.

        Values may be 0-d device tensors (resolved on the worker). A `watch`ed model's statistics come from its
        backward-pass hooks, not from here; only for a watched model whose hooks have seen no backward pass
        (gradients assigned by hand) are they collected here, on steps where `step % log_freq == 0`. Either way
        a watched model logs at most one set of statistics per step.
        """
        metrics = training_step_metrics(loss, grad_norm=grad_norm, learning_rate=learning_rate,
                                        nan_count=nan_count, inf_count=inf_count, clipped=clipped)
        self.log_metrics(metrics, step)
        at = self._step if step is None else step
        for watcher in self._watchers:
            collected = watcher.maybe_collect(at) if watcher.attached and watcher.passes == 0 else None
            if collected is not None:
                self._log_watched(watcher, collected, at)

    def watch(self, model: torch.nn.Module, log: WatchMode | None = "gradients", log_freq: int = 100,
              log_graph: bool = False, *, name: str | None = None) -> ModelWatcher:
        """Record `model`'s gradient and/or weight statistics every `log_freq` backward passes, as `wandb.watch`.

        Nothing else to call: hooks on the model's trainable parameters count backward passes. On every
        `log_freq`-th pass (the `log_freq`-th, the `2 * log_freq`-th, ...) the statistics are taken on the device
        when the pass ends, and logged when the next pass starts (or at `unwatch`/close) at the tracker's current
        step then: in a loop that logs after `optimizer.step()`, the step it logged for that backward pass. No
        value is read on the training thread, and the tracker's step is never advanced.

        A step is one backward pass, as in wandb: with gradient accumulation over k micro-batches a `log_freq`
        that is a multiple of k records the gradients summed over the whole optimizer step. A model called several
        times before one `backward()` counts one pass. Frozen parameters and those without a gradient in a pass are
        left out of the gradient statistics (frozen ones keep their weight statistics). Under a `GradScaler` the
        gradients at the end of backward are scaled: their norms and histograms are the loss scale times the true
        ones (NaN/Inf counts are what the scaler will find). With DDP the gradients are taken after its averaging.

        Args:
            model: The module trained, or its DDP / DataParallel / `torch.compile` wrapper (keys use the names of
                the module inside). Watching a watched model again replaces its hooks and settings.
            log: "gradients": `grad/<param>/norm`, `grad/global_norm`, `grad/nan_count`, `grad/inf_count` and
                histograms `grad/<param>`; "parameters": `param/<param>/norm` and histograms `param/<param>`;
                "all": both; None: nothing (with `log_graph`, the graph only).
            log_freq: Backward passes from one record to the next.
            log_graph: Trace the model on its first forward pass into TensorBoard's Graphs tab.
            name: Key prefix, `grad/<name>/...`, to keep several models apart; by default the first model watched
                has none and each further one its class name (`grad/Discriminator/...`).

        Returns:
            The `ModelWatcher` (`passes` counted so far; `collect()` gives the numbers now).
        """
        self._check_open()
        existing = next((w for w in self._watchers if w.attached and w.watches(model)), None)
        if name is None:
            name = existing.name if existing is not None else self._watch_name(model)
        elif any(w.name == name and w is not existing for w in self._watchers):
            raise ValueError(f"name: expected a name no other watched model of this run uses, received {name!r}")
        watcher = ModelWatcher(model, log=log, log_freq=log_freq, name=name)
        if existing is not None:
            self._unwatch_one(existing, log_pending=True)
            self._watchers[self._watchers.index(existing)] = watcher
        else:
            self._watchers.append(watcher)
        self._attach_watcher(watcher, log_graph)
        return watcher

    def unwatch(self, model: torch.nn.Module | None = None) -> None:
        """Remove `watch`'s hooks from `model` (every watched model when None), after logging the statistics it
        took and has not logged yet. A model never watched gets a warning, as in wandb."""
        watched = [w for w in self._watchers if w.attached and (model is None or w.watches(model))]
        if model is not None and not watched:
            warnings.warn(f"unwatch: {type(model).__name__} is not watched by run {self.run_name!r}", stacklevel=2)
        unseen = [w for w in watched if self._unwatch_one(w, log_pending=not self._closed)]
        if unseen:
            warnings.warn(no_backward_message(unseen, "unwatch"), stacklevel=2)

    def _watch_name(self, model: torch.nn.Module) -> str:
        """No prefix for the first model watched in this run; the class name (made unique) for the others."""
        if not self._watchers:
            return ""
        used = {w.name for w in self._watchers}
        base = type(unwrap_model(model)).__name__
        return next(n for n in (base, *(f"{base}_{i}" for i in range(2, len(used) + 3))) if n not in used)

    @rank_zero_only
    def _attach_watcher(self, watcher: ModelWatcher, log_graph: bool) -> None:
        tracker = weakref.ref(self)  # the model's hooks must not keep a finished run alive

        def deliver(stats: Stats) -> None:
            live = tracker()
            if live is not None and not live._closed:
                live._log_watched(watcher, stats, live._current_step(None))

        def graph(module: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
            live = tracker()
            if live is not None and not live._closed:
                with torch.no_grad():
                    live._log_graph(watcher.name or "model", module, inputs)

        watcher.attach(deliver, graph if log_graph else None)

    def _log_watched(self, watcher: ModelWatcher, stats: Stats, step: int) -> None:
        """Hand one set of `watcher`'s statistics to the writer at `step`, unless it logged one there already."""
        scalars, histograms = stats
        if step == watcher.logged_step or not (scalars or histograms):
            return
        watcher.logged_step = step
        now = time.time()
        if scalars:
            self._put(Scalars(step, now, self._scalars.check(scalars)), 64 + 48 * len(scalars))
        for key, values in histograms.items():  # already private copies: no second clone (log_histogram's)
            self._put(Histogram(key, values, step, now), 256 + values.numel() * values.element_size())

    def _unwatch_one(self, watcher: ModelWatcher, *, log_pending: bool) -> bool:
        """Detach `watcher`, logging what it took and had not logged; True when it recorded nothing because no
        backward pass reached it."""
        pending = watcher.detach()
        if pending is not None and log_pending:
            self._log_watched(watcher, pending, self._current_step(None))
        return watcher.log is not None and watcher.passes == 0 and watcher.logged_step is None

    def _close_watchers(self) -> None:
        """At close, before the writer closes: every watched model's last statistics are logged and its hooks
        removed; one warning names the watched models no backward pass reached."""
        unseen = [w for w in self._watchers if w.attached and self._unwatch_one(w, log_pending=True)]
        if unseen:
            warnings.warn(no_backward_message(unseen, "close"), stacklevel=3)

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
        """The run's `CheckpointManager` (`<checkpoint_dir>/<run_name>/`), created on first use.

        On a non-zero rank it only reads what rank 0 writes (`read_only=True`: its `latest`, `best` and `load`
        re-read rank 0's manifest).
        """
        if self._checkpoints is None:
            cfg = self.config
            self._checkpoint_barrier = CheckpointBarrier(self.run_name)
            self._checkpoints = CheckpointManager(
                Path(cfg.checkpoint_dir) / self.run_name, keep_last=cfg.checkpoint_keep_last,
                keep_best=cfg.checkpoint_keep_best, monitor=cfg.checkpoint_monitor, mode=cfg.checkpoint_mode,
                async_save=cfg.async_checkpoint, run_name=self.run_name, on_saved=self._checkpoint_barrier.written,
                on_failed=self._checkpoint_barrier.failed, read_only=self.rank != 0)
        return self._checkpoints

    @rank_zero_only
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

    def save_checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                        scheduler: Any = None, epoch: int = 0, metrics: Mapping[str, Any] | None = None, *,
                        step: int | None = None, scaler: Any = None,
                        extra: dict[str, Any] | None = None) -> CheckpointInfo | None:
        """Save a verified, atomic checkpoint (the original API) and record the event.

        With `async_checkpoint` (the default) only the copy to CPU memory happens here; the returned info's
        size and sha256 are final once `tracker.checkpoints.wait()` returns. The best checkpoint by
        `checkpoint_monitor` (the latest without one) is sent to every backend as a model artifact with
        aliases `best`/`latest` when the tracker closes (W&B and MLflow keep it).

        Under torchrun, call it on every rank (as often on each): global rank 0 saves, once, and every other rank
        waits for it and returns rank 0's `CheckpointInfo`. Without `async_checkpoint` every rank returns only
        once the file and the manifest are on disk; with it, once rank 0 holds its CPU copy (the write goes on in
        the background, and `load_checkpoint` on any rank waits for it). Rank 0's error is raised on every rank
        (`CheckpointSaveError` elsewhere). The other ranks' model states are not saved (with DDP they equal rank
        0's). A process of another launcher, before `init_process_group`, has no way to wait: it returns None.
        """
        self._check_open()
        at = self._current_step(step)
        directory = self.checkpoints.directory
        index = self._checkpoint_barrier.next_save()
        info = self._save_checkpoint_here(index, model, optimizer, scheduler, scaler, epoch, at, metrics, extra)
        return info if info is not None else self._checkpoint_barrier.wait_saved(index, directory)

    @rank_zero_only
    def _save_checkpoint_here(self, index: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                              scheduler: Any, scaler: Any, epoch: int, step: int, metrics: Mapping[str, Any] | None,
                              extra: dict[str, Any] | None) -> CheckpointInfo:
        try:
            info = self.checkpoints.save(model, optimizer, scheduler, scaler, epoch=epoch, step=step,
                                         metrics=dict(metrics or {}), extra=extra)
        except Exception as exc:
            self._checkpoint_barrier.saved(index, None, exc)  # the other ranks raise it too, instead of hanging
            raise
        self._checkpoint_barrier.saved(index, info)
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

        Under torchrun every rank loads the file rank 0 wrote (read from rank 0's manifest), after waiting for
        rank 0's last `save_checkpoint` of this tracker to be on disk.
        """
        manager = self.checkpoints
        self._checkpoint_barrier.wait_written()
        loaded = manager.load(which, model, optimizer, scheduler, scaler)
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
