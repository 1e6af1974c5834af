"""Moved to `opusclip_track._downsample` (shared with the run store); these names stay importable from here."""

from opusclip_track._downsample import bucket_mean, ema, minmax_downsample

__all__ = ["bucket_mean", "ema", "minmax_downsample"]
