"""opusclip-track: experiment tracking and evaluation for video-generation research.

Example:
    >>> from opusclip_track import AdvancedExperimentTracker, TrackingConfig
    >>> config = TrackingConfig(experiment_name="vgen-baseline")       # doctest: +SKIP
    >>> with AdvancedExperimentTracker(config) as tracker:            # doctest: +SKIP
    ...     tracker.log_metrics({"train/loss": 0.42}, step=0)
"""

from .config import TrackingConfig
from .store import RunStore, list_runs
from .tracker import AdvancedExperimentTracker

__all__ = ["AdvancedExperimentTracker", "RunStore", "TrackingConfig", "list_runs"]
__version__ = "0.1.0"
