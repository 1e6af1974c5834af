"""opusclip-track: experiment tracking and evaluation for video-generation research.

Example:
    >>> from opusclip_track import AdvancedExperimentTracker, TrackingConfig
    >>> config = TrackingConfig(experiment_name="vgen-baseline")       # doctest: +SKIP
    >>> with AdvancedExperimentTracker(config) as tracker:            # doctest: +SKIP
    ...     tracker.log_metrics({"train/loss": 0.42}, step=0)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import TrackingConfig

if TYPE_CHECKING:
    from .records import RunStatus
    from .store import RunLockedError, RunStore, list_runs
    from .tracker import AdvancedExperimentTracker

__all__ = ["AdvancedExperimentTracker", "RunLockedError", "RunStatus", "RunStore", "TrackingConfig", "list_runs"]
__version__ = "0.1.0"

# Imported on first use (PEP 562): the tracker pulls in torch, which a sweep worker process or a command
# that only reads a store does not need to pay for at start-up.
_LAZY = {"AdvancedExperimentTracker": ".tracker", "RunStore": ".store", "list_runs": ".store",
         "RunLockedError": ".store", "RunStatus": ".records"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
