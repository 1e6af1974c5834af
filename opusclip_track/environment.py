"""What a run needs to be reproduced: software versions, hardware, command line, git state, seeds."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from opusclip_track.config import redact_argv, redact_secrets
from opusclip_track.system import gpu_names

_PACKAGES = ("torch", "torchvision", "numpy", "wandb", "tensorboard", "opusclip-track")
# Environment variables that change what a run computes or where it runs.
_ENV_PREFIXES = ("CUDA_", "CUBLAS_", "CUDNN_", "NCCL_", "TORCH_", "PYTORCH_", "OMP_", "MKL_", "WANDB_")
_ENV_NAMES = ("PYTHONHASHSEED", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
              "MASTER_PORT", "SLURM_JOB_ID", "SLURM_PROCID")
_GIT_TIMEOUT_S = 5.0


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of `git -C cwd <args>`, or None when git is missing, slow, or not in a repository."""
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """HEAD of the repository holding `cwd` (default: the working directory), or None outside one."""
    head = _git(Path.cwd() if cwd is None else Path(cwd), "rev-parse", "HEAD")
    return head.strip() if head else None


def git_state(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """`{"commit": sha, "branch": name, "dirty": bool}` of the repository holding `cwd`; Nones outside one.

    Dirty means `git status --porcelain` lists anything: modified, staged or untracked files.
    """
    where = Path.cwd() if cwd is None else Path(cwd)
    head = _git(where, "rev-parse", "HEAD", "--abbrev-ref", "HEAD")
    if head is None or len(head.split()) != 2:  # no repository, or one without a commit yet
        return {"commit": None, "branch": None, "dirty": None}
    commit, branch = head.split()
    status = _git(where, "status", "--porcelain")
    return {"commit": commit, "branch": None if branch == "HEAD" else branch,
            "dirty": None if status is None else bool(status.strip())}


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _relevant_env_vars() -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    return dict(sorted(redact_secrets(found).items()))


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version()
    except RuntimeError:  # a cuDNN library that cannot be loaded
        return None


def capture_environment(argv: list[str] | None = None, seed: int | None = None,
                        cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Describe the software, hardware and invocation of this run, secrets redacted.

    The result is JSON-serialisable; store it as the run config's `environment` entry
    (`config["environment"] = capture_environment(...)`). Its keys: `python`, `platform`, `hostname`,
    `executable`, `cwd`, `command` (argv, secrets redacted), `git` (`commit`, `branch`, `dirty`: None
    outside a repository), `torch`, `cuda`, `cudnn`, `gpus` (names, [] without any), `cpu_count`,
    `packages` (versions of torch, torchvision, numpy, wandb, tensorboard, opusclip-track; None when
    missing), `seed` (the one given), `torch_initial_seed` (the seed of torch's default generator, which
    reproduces an unseeded run), `env_vars` (CUDA_*, NCCL_*, OMP_*, WANDB_*, rank variables, ...: secret
    ones redacted).

    Args:
        argv: The command line; default `sys.argv`.
        seed: The seed the program set, if any.
        cwd: Directory whose git repository is described; default the current directory.

    Example:
        >>> env = capture_environment(["train.py", "--api-key", "abc"], seed=0)
        >>> env["command"]
        ['train.py', '--api-key', '***REDACTED***']
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"capture_environment seed: expected an int or None, received {type(seed).__name__}")
    where = Path.cwd() if cwd is None else Path(cwd)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "executable": sys.executable,
        "cwd": str(where.resolve()),
        "command": redact_argv(list(sys.argv if argv is None else argv)),
        "git": git_state(where),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "gpus": gpu_names(),
        "cpu_count": os.cpu_count(),
        "packages": _package_versions(),
        "seed": seed,
        "torch_initial_seed": torch.initial_seed(),
        "env_vars": _relevant_env_vars(),
    }
