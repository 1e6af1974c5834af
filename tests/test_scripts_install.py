"""What `pip install` puts on a user's path: the library only; the example models stay in the checkout, and the
scripts find them there even when the user has a `models` package of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_the_library_and_no_top_level_models_package(tmp_path: Path) -> None:
    """The wheel used to hold `models/` at the top level, where it shadows (or is shadowed by) a user's own
    `models` package. Built from a copy of the sources so the build leaves no `build/` in the checkout."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("opusclip_track", "models"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top_level == {"opusclip_track", "opusclip_track-0.1.0.dist-info"}


@pytest.mark.parametrize("script", ["quick_start.py", "compare_models.py"])
def test_the_scripts_use_the_example_models_of_their_checkout_beside_a_users_own_models(
        tmp_path: Path, script: str) -> None:
    """A user's project with its own `models` package on PYTHONPATH used to hide the example models from the
    scripts (ModuleNotFoundError: models.training)."""
    (tmp_path / "project" / "models").mkdir(parents=True)
    (tmp_path / "project" / "models" / "__init__.py").write_text('"""The user\'s own models."""\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "project"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--max-steps" in proc.stdout
