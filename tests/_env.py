"""One isolated environment for every test: its own directory, no W&B or MLflow settings of this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


def isolate(env: pytest.MonkeyPatch, root: Path) -> None:
    """Run in `root` with no W&B credentials (so `wandb_mode="auto"` means offline) and no MLflow server set."""
    env.chdir(root)
    env.delenv("WANDB_API_KEY", raising=False)
    env.delenv("MLFLOW_TRACKING_URI", raising=False)
    env.setenv("NETRC", str(root / "no-netrc"))
    env.setenv("WANDB_CONFIG_DIR", str(root / ".wandb-config"))
    env.setenv("WANDB_CACHE_DIR", str(root / ".wandb-cache"))


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Tiny models: on a shared CPU runner, several intra-op threads per process oversubscribe the cores and make
    the steps dozens of times slower, while one thread loses nothing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
