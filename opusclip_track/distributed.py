"""Distributed helpers: which rank this process is, rank-zero-only writes, and metric reductions.

Only global rank 0 writes (files, W&B runs, checkpoints). Other ranks go through the same code, and every
write method is a no-op there through one decorator, never through scattered `if rank == 0` checks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch

F = TypeVar("F", bound=Callable[..., Any])

_RANK_ENV_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def get_rank() -> int:
    """Global rank: from `torch.distributed` when initialised, else the launcher's environment, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    for name in _RANK_ENV_VARS:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


def rank_zero_only(fn: F) -> F:
    """Run `fn` on global rank 0 only; elsewhere return None without calling it.

    The rank is read once (`rank_zero_only.rank`) and refreshed by `refresh_rank()`, which the tracker calls
    when it starts, so the check on the hot path is one attribute read.
    """

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            return fn(*args, **kwargs)
        return None

    return cast(F, wrapped)


rank_zero_only.rank = get_rank()  # type: ignore[attr-defined]


def refresh_rank() -> int:
    """Re-read the rank (after `torch.distributed.init_process_group`) and return it."""
    rank_zero_only.rank = get_rank()  # type: ignore[attr-defined]
    return int(rank_zero_only.rank)  # type: ignore[attr-defined]


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of `value` over all ranks (itself when not distributed). Every rank must call it."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    out = value.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out / torch.distributed.get_world_size()
