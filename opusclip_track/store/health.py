"""A run's health as its store keeps it: the run writer's `health` (`RunWriter.health`, documented on
`AdvancedExperimentTracker.health`), written to `meta["health"]` when the run closes.

`health_problems` says which entries mean something went wrong, for everyone who reports them: the run's own
warning at close, `opusclip-track runs show` and the HTML report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONTEXT_KEYS = ("ok", "store_last_error", "slowest_batch_s", "backend_last_error")
"""Entries that say why or how long, not that something went wrong."""


def health_problems(health: Mapping[str, Any]) -> list[str]:
    """The entries of a run's health that say something went wrong, as `key=value`: non-zero counts, non-empty
    lists, and per-backend counts that are not all zero (shown without the zero ones), e.g.
    `["store_lost=2", "backend_gave_up={'wandb': 5}"]`; empty for a healthy run.

    When only `ok` is False, one entry says that records are missing somewhere.
    """
    problems = []
    for key, value in health.items():
        if key in CONTEXT_KEYS or not value or (isinstance(value, Mapping) and not any(value.values())):
            continue
        shown = {k: v for k, v in value.items() if v} if isinstance(value, Mapping) else value
        problems.append(f"{key}={shown}")
    if not problems and health.get("ok") is False:
        problems.append("records are missing somewhere (ok=False)")
    return problems
