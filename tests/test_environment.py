"""capture_environment against a real temporary git repository and this interpreter."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import torch

from opusclip_track.checkpoint import CheckpointManager
from opusclip_track.config import REDACTED
from opusclip_track.environment import capture_environment, git_commit, git_state

SECRET = "s3cr3t-value-1234"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com",
                           *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('hi')\n")
    _git(root, "add", "train.py")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_git_commit_and_dirty_flag_of_a_real_repository(repo: Path) -> None:
    env = capture_environment(argv=["train.py"], cwd=repo)
    assert env["git"] == {"commit": _git(repo, "rev-parse", "HEAD"), "branch": "main", "dirty": False}
    (repo / "train.py").write_text("print('changed')\n")
    assert capture_environment(argv=["train.py"], cwd=repo)["git"]["dirty"] is True


def test_untracked_file_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "new_module.py").write_text("x = 1\n")
    assert git_state(repo)["dirty"] is True


def test_outside_a_repository_git_is_none(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "branch": None, "dirty": None}
    assert git_commit(tmp_path) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")  # a repository without a commit yet
    assert git_state(empty)["commit"] is None
    assert git_commit(empty) is None


def test_a_checkpoint_records_the_commit_of_the_working_directory(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.chdir(repo)
    assert git_commit() == _git(repo, "rev-parse", "HEAD")
    with CheckpointManager(repo / "ckpt", async_save=False) as manager:
        manager.save(torch.nn.Linear(2, 2), epoch=0, step=1)
    manifest = json.loads((repo / "ckpt" / "manifest.json").read_text())
    assert manifest["checkpoints"][0]["git_commit"] == _git(repo, "rev-parse", "HEAD")


def test_secrets_never_appear(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    argv = ["train.py", "--api-key", SECRET, f"--wandb_token={SECRET}", "--lr", "0.1"]
    env = capture_environment(argv=argv, seed=7, cwd=repo)
    assert SECRET not in repr(env) and SECRET not in json.dumps(env)
    assert env["command"] == ["train.py", "--api-key", REDACTED, f"--wandb_token={REDACTED}", "--lr", "0.1"]
    assert env["env_vars"]["WANDB_API_KEY"] == REDACTED
    assert env["env_vars"]["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_versions_seeds_and_hardware(repo: Path) -> None:
    env = capture_environment(argv=["train.py"], seed=1234, cwd=repo)
    json.dumps(env)  # fit for a run config as is
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__ and env["cuda"] == torch.version.cuda
    assert env["packages"]["numpy"] == metadata.version("numpy")
    assert env["packages"]["tensorboard"] == metadata.version("tensorboard")
    assert env["seed"] == 1234 and env["torch_initial_seed"] == torch.initial_seed()
    assert env["cwd"] == str(repo.resolve())
    expected_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert isinstance(env["gpus"], list) and len(env["gpus"]) == expected_gpus
    with pytest.raises(TypeError, match="seed"):
        capture_environment(seed="7")  # type: ignore[arg-type]
