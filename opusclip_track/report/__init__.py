"""Offline HTML reports comparing runs: curves, per-frame quality, clips in lock-step, statistics over seeds.

    from opusclip_track.report import build_report
    build_report(["runs/cmp-*"], "report.html", group_by="train.model", json_path="stats.json")

The names below are imported on first use (PEP 562): `import opusclip_track.report.cli`, which the command
line does to build its parser, loads neither numpy nor scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opusclip_track._downsample import bucket_mean, ema, minmax_downsample
    from opusclip_track.report.build import Report, ReportResult, build_report, collect, report_json, statistics
    from opusclip_track.report.stats import compare_groups, describe_comparison, direction, hedges_g, summarize

_LAZY: dict[str, str] = {
    **dict.fromkeys(("Report", "ReportResult", "build_report", "collect", "report_json", "statistics"), ".build"),
    **dict.fromkeys(("bucket_mean", "ema", "minmax_downsample"), "opusclip_track._downsample"),
    **dict.fromkeys(("compare_groups", "describe_comparison", "direction", "hedges_g", "summarize"), ".stats"),
}

__all__ = [
    "Report", "ReportResult", "build_report", "bucket_mean", "collect", "compare_groups", "describe_comparison",
    "direction", "ema", "hedges_g", "minmax_downsample", "report_json", "statistics", "summarize",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
