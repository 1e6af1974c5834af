"""Shared fixtures: every test runs in its own temporary directory, W&B offline and quiet."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (_wandb_reader, _readers, _postgres, _env)
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

from _env import isolate, single_thread  # noqa: E402, F401  (single_thread: a fixture for the modules that ask)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in tmp_path with no W&B credentials (`wandb_mode="auto"` means offline) and no MLflow server set."""
    isolate(monkeypatch, tmp_path)
    yield


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"
