"""Thin adapters so training code that logs through a framework logs into opusclip-track unchanged.

- `opusclip_track.integrations.accelerate.OpusclipTracker`: an accelerate `GeneralTracker`
  (`Accelerator(log_with=[OpusclipTracker(...)])`, diffusers-style scripts).
- `opusclip_track.integrations.lightning.OpusclipLogger`: a Lightning `Logger` (`Trainer(logger=OpusclipLogger(...))`).

Each module imports its framework, so import the one you use; this package imports neither.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import TrackingConfig


def tracking_config(run_name: str | None, config: TrackingConfig | None, options: dict[str, Any],
                    default_experiment: str) -> TrackingConfig:
    """The run's `TrackingConfig`: `config` as given, else one built from `options` (validated now, so a typo
    fails where the logger is created). `run_name` names the run; the experiment defaults to it."""
    if config is not None:
        if options:
            raise TypeError(f"tracking options: pass a TrackingConfig or keyword options, not both "
                            f"(received config and {sorted(options)})")
        if not isinstance(config, TrackingConfig):
            raise TypeError(f"config: expected a TrackingConfig, received {type(config).__name__}")
        return config if run_name is None else dataclasses.replace(config, run_name=run_name)  # validated
    options = {"experiment_name": run_name or default_experiment, **options}
    return TrackingConfig(run_name=run_name, **options)

