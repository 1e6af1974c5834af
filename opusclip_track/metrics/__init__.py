"""Video-quality metrics: functional twins and streaming classes (filled in as the modules land)."""

from opusclip_track.metrics._input import check_pair, prepare_pair, prepare_videos

__all__ = ["check_pair", "prepare_pair", "prepare_videos"]
