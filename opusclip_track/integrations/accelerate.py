"""accelerate integration: `OpusclipTracker`, a `GeneralTracker`, so scripts that log through `accelerator.log`
(diffusers' training scripts and most video-model fine-tuning code) write an opusclip-track run unchanged.

Example:
    >>> from accelerate import Accelerator                                               # doctest: +SKIP
    >>> from opusclip_track.integrations.accelerate import OpusclipTracker
    >>> accelerator = Accelerator(log_with=[OpusclipTracker(run_name="vdm-ft", project_name="vgen")],
    ...                           gradient_accumulation_steps=4)
    >>> accelerator.init_trackers("vgen", config={"lr": 1e-4})
    >>> accelerator.log({"train/loss": loss, "lr": lr}, step=global_step)     # a tensor is fine
    >>> accelerator.get_tracker("opusclip", unwrap=True).log_video(clip, "samples", step=global_step)
    >>> accelerator.end_training()

accelerate does not pass `init_trackers`' project name to a tracker it did not build; give it to the tracker
(`project_name=`, the W&B project and MLflow experiment) as above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from accelerate.tracking import GeneralTracker, on_main_process
except ModuleNotFoundError as exc:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError("opusclip_track.integrations.accelerate needs `pip install "
                              "opusclip-track[accelerate]`") from exc

from ..config import TrackingConfig
from ..tracker import AdvancedExperimentTracker
from . import tracking_config


class _NoTracker:
    """`.tracker` on processes that do not log (accelerate runs trackers on the main process only): every
    method is a no-op, so `get_tracker("opusclip", unwrap=True).log_video(...)` needs no rank check."""

    def _nop(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return self._nop


class OpusclipTracker(GeneralTracker):
    """An accelerate tracker writing an opusclip-track run (local store, TensorBoard, W&B, MLflow, ...).

    Args:
        run_name: the run's name (`runs/<run_name>/`); generated when None. Also the experiment name unless
            `experiment_name` is given.
        config: a complete `TrackingConfig` instead of keyword options.
        **tracking_options: `TrackingConfig` fields (`project_name`, `log_dir`, `use_wandb`, `backends`, ...),
            checked here, so a typo fails before training starts.
    """

    name = "opusclip"
    requires_logging_directory = False  # the run directory comes from `log_dir`, not from Accelerator
    main_process_only = True

    def __init__(self, run_name: str | None = None, *, config: TrackingConfig | None = None,
                 **tracking_options: Any) -> None:
        super().__init__()
        self.config = tracking_config(run_name, config, tracking_options, "accelerate")
        self.run_name = self.config.run_name
        self._tracker: AdvancedExperimentTracker | None = None

    @on_main_process
    def start(self) -> None:
        """Open the run (accelerate calls this from `init_trackers`, on the main process)."""
        if self._tracker is None:
            self._tracker = AdvancedExperimentTracker(self.config)

    @property
    def tracker(self) -> AdvancedExperimentTracker | Any:
        """The `AdvancedExperimentTracker` (clips, video metrics, checkpoints); a no-op object on other processes."""
        return self._tracker if self._tracker is not None else _NoTracker()

    @on_main_process
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """`init_trackers(..., config=values)`: the run's hyperparameters."""
        self._open().log_hyperparameters(values)

    @on_main_process
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """`accelerator.log(values, step)`: numbers and one-element tensors are scalars, a dict of numbers is
        scalars under `<key>/<name>` (as TensorBoard's `add_scalars`), a string is a text entry."""
        if kwargs:
            raise TypeError(f"log_kwargs['opusclip']: expected none, received {sorted(kwargs)}")
        if not isinstance(values, Mapping):
            raise TypeError(f"values: expected a dict, received {type(values).__name__}")
        tracker = self._open()
        scalars: dict[str, Any] = {}
        texts: dict[str, str] = {}
        for key, value in values.items():
            if isinstance(value, str):
                texts[key] = value
            elif isinstance(value, Mapping):
                scalars.update({f"{key}/{name}": v for name, v in value.items()})
            else:
                scalars[key] = value
        if scalars:
            tracker.log_metrics(scalars, step)
        for key, text in texts.items():
            tracker.log_text(key, text, step)

    @on_main_process
    def finish(self) -> None:
        """`accelerator.end_training()`: flush and close the run (finished)."""
        if self._tracker is not None:
            self._tracker.close()

    def _open(self) -> AdvancedExperimentTracker:
        if self._tracker is None:  # logging before init_trackers: start as accelerate would have
            self.start()
        assert self._tracker is not None
        return self._tracker
