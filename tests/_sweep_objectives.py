"""Objectives for the sweep tests, importable by worker processes (which import only this and optuna)."""

from __future__ import annotations

import os
import time
from typing import Any


def quadratic(params: dict[str, Any], trial: Any) -> float:
    """A bowl with its minimum at lr=0.01, wd=0."""
    return float((params["lr"] - 0.01) ** 2 + params.get("wd", 0.0))


def slow_quadratic(params: dict[str, Any], trial: Any) -> float:
    """`quadratic`, taking long enough per trial that a kill lands mid-trial."""
    time.sleep(float(os.environ.get("SWEEP_TEST_TRIAL_S", "0.6")))
    return quadratic(params, trial)


def learning_curve(params: dict[str, Any], trial: Any) -> float:
    """A flat curve at `offset` reported over 9 steps: a larger offset is clearly worse at every step."""
    value = float(params["offset"])
    for step in range(1, 10):
        value = params["offset"] + 1.0 / step
        trial.report(value, step)
    return value
