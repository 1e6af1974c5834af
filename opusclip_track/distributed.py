"""Distributed helpers: which rank this process is, rank-zero-only writes, what rank 0 tells the others, and
metric reductions.

Only global rank 0 writes (files, W&B runs, checkpoints). Other ranks go through the same code, and every
write method is a no-op there through one decorator, never through scattered `if rank == 0` checks.

What the other ranks must learn from rank 0 (a generated run name, that a checkpoint is on disk) travels through a
key-value store (`RankZeroChannel`), not through a collective: rank 0 sets a key and goes on, the others wait for it.
A collective (`broadcast_object_list`, `barrier`) would block rank 0 until every rank joins, and hang for good in
the common pattern where only rank 0 creates a tracker (accelerate's trackers, Lightning's loggers, `if rank == 0:`),
and under NCCL it needs the device set first. The store is torchrun's own (the elastic agent's, at
`MASTER_ADDR:MASTER_PORT`: there before `init_process_group` is called, and the same store after), else, once
`init_process_group` has run with the `env://` rendezvous (other launchers: mpirun, srun), the TCP store that
rendezvous serves at `MASTER_ADDR:MASTER_PORT` (torch has no public getter for a group's store, so we connect to it
as a client). A group initialised another way (`tcp://`, `file://`) gives no store: a non-zero rank then needs a
given `run_name`.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch

F = TypeVar("F", bound=Callable[..., Any])

_RANK_ENV_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
_WORLD_SIZE_ENV_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
# torchrun's agent store waits this long by default, like `init_process_group`'s default timeout for gloo.
_AGENT_STORE_TIMEOUT = timedelta(minutes=30)


def _initialized() -> bool:
    return bool(torch.distributed.is_available() and torch.distributed.is_initialized())


def _from_env(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return default


def get_rank() -> int:
    """Global rank: from `torch.distributed` when initialised, else the launcher's environment, else 0."""
    if _initialized():
        return int(torch.distributed.get_rank())
    return _from_env(_RANK_ENV_VARS, 0)


def get_world_size() -> int:
    """Number of processes: from `torch.distributed` when initialised, else the launcher's environment
    (`WORLD_SIZE`, `SLURM_NTASKS`, ...), else 1."""
    if _initialized():
        return int(torch.distributed.get_world_size())
    return _from_env(_WORLD_SIZE_ENV_VARS, 1)


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


def reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of `value` over all ranks (itself when not distributed). Every rank must call it."""
    if not _initialized():
        return value
    out = value.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of `value` over all ranks (itself when not distributed). Every rank must call it."""
    if not _initialized():
        return value
    return reduce_sum(value) / torch.distributed.get_world_size()


# ---- what rank 0 tells the other ranks ------------------------------------------------------------------------
_counters: Counter[str] = Counter()


def next_index(name: str) -> int:
    """0, 1, 2, ... for successive calls with `name` in this process: how ranks number the things they agree on
    (the n-th tracker of an experiment, the n-th checkpoint of a run) without talking."""
    index = _counters[name]
    _counters[name] += 1
    return index


@functools.lru_cache(maxsize=1)
def _client_store(host: str, port: int) -> torch.distributed.Store:
    # One client connection per process, kept: the server (torchrun's agent, or rank 0's env:// rendezvous) serves
    # this store for the whole job.
    return torch.distributed.TCPStore(host, port, is_master=False, timeout=_AGENT_STORE_TIMEOUT)


def _store() -> torch.distributed.Store | None:
    """torchrun's agent store when this process was started by torchrun; else, once `init_process_group` has run,
    the TCP store of its `env://` rendezvous at `MASTER_ADDR:MASTER_PORT`; else None."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT", "")
    if not (host and port.isdigit()):
        return None
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" or _initialized():
        return _client_store(host, int(port))
    return None


class RankZeroChannel:
    """Values rank 0 publishes under a key and the other ranks wait for (strings, through the job's store).

    Rank 0 never waits. Keys are prefixed with the elastic restart count, so a restarted worker group never reads
    what the previous attempt published.

    Raises (from `receive`):
        RuntimeError: naming the key and the wait, when rank 0 has not published it within the store's timeout.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    @staticmethod
    def available() -> bool:
        """Whether there is a store to talk through (see the module docstring)."""
        return _store() is not None

    def _key(self, key: str) -> str:
        return f"opusclip_track/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{self.namespace}/{key}"

    def publish(self, key: str, value: str) -> bool:
        """Rank 0: make `value` readable under `key`; False when there is nobody to tell or no store."""
        store = _store() if get_world_size() > 1 else None
        if store is None:
            return False
        store.set(self._key(key), value)
        return True

    def receive(self, key: str, what: str) -> str | None:
        """Other ranks: wait until rank 0 has published `key` and return its value; None when there is no store.

        Args:
            key: the key rank 0 publishes.
            what: what is waited for, for the error message ("the run name of tracker 0 of experiment 'x'").
        """
        store = _store()
        if store is None:
            return None
        full = self._key(key)
        try:
            store.wait([full])
        except Exception as exc:  # DistStoreError (a timeout) or a connection error, from C++
            waited = getattr(store, "timeout", "the store's timeout")  # not in torch's type stubs
            raise RuntimeError(f"rank {get_rank()} waited {waited} for rank 0 to publish {what} (store key "
                               f"{full!r}) and gave up ({type(exc).__name__}: {exc}); rank 0 must do the same calls "
                               "in the same order (create the tracker, save_checkpoint) as every other rank") from exc
        return store.get(full).decode()
