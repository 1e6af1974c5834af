"""Lightning integration: `OpusclipLogger`, a `lightning.pytorch.loggers.Logger`, so `self.log(...)` in a
LightningModule writes an opusclip-track run (store, TensorBoard, W&B, MLflow, ...) with Lightning's steps.

Example:
    >>> import lightning.pytorch as pl                                                     # doctest: +SKIP
    >>> from opusclip_track.integrations.lightning import OpusclipLogger
    >>> logger = OpusclipLogger(run_name="vdm-pl", project_name="vgen", use_wandb=False)
    >>> best = pl.callbacks.ModelCheckpoint(monitor="val/loss")
    >>> trainer = pl.Trainer(logger=logger, max_steps=1000, callbacks=[best])
    >>> trainer.fit(model, datamodule)
    >>> # in the module: self.logger.experiment.log_video(clip, "samples", step=self.global_step)

Only global rank zero writes (Lightning's `rank_zero_only`); elsewhere `experiment` is Lightning's no-op object.
Lightning's own checkpoints go to `<log_dir>/<experiment_name>/<run_name>/checkpoints/` (Lightning's layout for
`save_dir/name/version`); the best one is recorded in the run config and logged as a model artifact.
"""

from __future__ import annotations

import dataclasses
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

try:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ModuleNotFoundError as exc:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError("opusclip_track.integrations.lightning needs `pip install "
                              "opusclip-track[lightning]`") from exc

from ..config import TrackingConfig
from ..tracker import AdvancedExperimentTracker
from . import tracking_config


class OpusclipLogger(Logger):
    """A Lightning logger writing an opusclip-track run.

    Args:
        run_name: the run's name (`runs/<run_name>/`, Lightning's `version`); generated when None. Also the
            experiment name (Lightning's `name`) unless `experiment_name` is given.
        config: a complete `TrackingConfig` instead of keyword options.
        **tracking_options: `TrackingConfig` fields (`project_name`, `log_dir`, `use_wandb`, `backends`, ...),
            checked here, so a typo fails before training starts.
    """

    def __init__(self, run_name: str | None = None, *, config: TrackingConfig | None = None,
                 **tracking_options: Any) -> None:
        super().__init__()
        self.config = tracking_config(run_name, config, tracking_options, "lightning")
        self._tracker: AdvancedExperimentTracker | None = None
        self._finalized = False
        self._checkpoint_callbacks: dict[int, ModelCheckpoint] = {}
        self._recorded: dict[int, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Spawn-based strategies pickle the trainer and its loggers; an open tracker (threads, files) cannot
        # travel, and the process that logs opens its own.
        return {**self.__dict__, "_tracker": None}

    # ---- what Lightning asks of a logger ----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The experiment name."""
        return self.config.experiment_name

    @property
    def version(self) -> str:
        """The run name."""
        return str(self.config.run_name)

    @property
    def save_dir(self) -> str:
        """`log_dir` of the config (`runs`): the root of every run."""
        return self.config.log_dir

    @property
    def root_dir(self) -> str:
        return self.config.log_dir

    @property
    def log_dir(self) -> str:
        """This run's directory (`runs/<run_name>`)."""
        return str(self.config.run_dir)

    @property
    @rank_zero_experiment
    def experiment(self) -> AdvancedExperimentTracker:
        """The run's `AdvancedExperimentTracker` (clips, video metrics, checkpoints), opened on first use.

        After `finalize` (the end of `trainer.fit`) a further use, such as `trainer.test`, reopens the same run.
        """
        if self._tracker is None or self._finalized:
            self._tracker = AdvancedExperimentTracker(self.config)
            self._finalized = False
            # A later opening (after finalize) continues this run rather than starting another.
            self.config = dataclasses.replace(self.config, resume=str(self.config.run_name))
        return self._tracker

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Lightning's `self.log` values at Lightning's step (`trainer.global_step` by default)."""
        self.experiment.log_metrics(dict(metrics), step)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The module's (and datamodule's) `save_hyperparameters()` values; nested dicts stay nested."""
        values = vars(params) if isinstance(params, Namespace) else dict(params)
        self.experiment.log_hyperparameters(values)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """After each Lightning checkpoint: when the best file changed, it and its score go into the run config
        (`lightning_checkpoints/<monitor>/best_model_path`, ...)."""
        self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback
        described = _describe(checkpoint_callback)
        if described != self._recorded.get(id(checkpoint_callback)):
            self._recorded[id(checkpoint_callback)] = described
            self.experiment.update_config({"lightning_checkpoints": {
                str(c.monitor or "latest"): self._recorded[i] for i, c in self._checkpoint_callbacks.items()}})

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End of fit/validate/test: log the best checkpoint as a model artifact and close the run, "failed"
        when Lightning says so (an exception in training), else "finished"."""
        if self._tracker is None or self._finalized:
            return
        for callback in self._checkpoint_callbacks.values():
            best = callback.best_model_path
            if best:
                info = _describe(callback)
                self._tracker.log_artifact(best, f"model-{self.version}", "model", ["best"], info)
        self._tracker.close("failed" if status == "failed" else "finished")
        self._finalized = True


def _describe(callback: ModelCheckpoint) -> dict[str, Any]:
    score = callback.best_model_score
    return {"best_model_path": callback.best_model_path,
            "best_model_score": None if score is None else float(score),
            "monitor": callback.monitor, "mode": callback.mode}
