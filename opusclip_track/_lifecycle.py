"""A run's life in its process: which earlier run it resumes when it opens, and how it ends when the script does
not close it (at exit, on SIGTERM, after an uncaught exception) or when the process forks.

* `resume_run_name` turns `TrackingConfig(resume=...)` into the run name to open.
* `settle_run_name` makes every rank of a multi-process job use rank 0's run name when it was generated (not
  given) or resolved by `resume=True`.
* `register` keeps a weak reference to every open run and installs the handlers once per process: `atexit`
  closes what is still open ("failed" with the error when the interpreter dies of an uncaught exception, else
  "finished"); SIGTERM closes everything as "failed" and then dies by SIGTERM as the sender expects (or calls the
  handler that was there before).
* A forked child (DataLoader worker, `multiprocessing` "fork", `os.fork`) inherits the parent's open runs but
  not their threads: it must neither write them nor close them at its exit (that would mark the parent's run
  finished and finish its W&B run), so every inherited run is abandoned in the child.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol

from .config import TrackingConfig
from .distributed import RankZeroChannel, get_world_size, next_index
from .records import RunStatus
from .store import RunStore, list_runs

log = logging.getLogger("opusclip_track")


class OpenRun(Protocol):
    """What the lifecycle needs of an open run (the tracker; private methods: they are not for its users)."""

    @property
    def run_name(self) -> str: ...

    def _finish(self, status: RunStatus, error: str | None) -> None:
        """Close the run with `status` and `error` (idempotent, never raises for its backends)."""

    def _abandon_after_fork(self) -> None:
        """In a forked child: never write or close this run (it is the parent's)."""


def describe(exc: BaseException) -> str:
    """`"TypeName: message"`, as a traceback's last line shows it."""
    return f"{type(exc).__name__}: {exc}"


# ---- resuming -----------------------------------------------------------------------------------------------
def resume_run_name(config: TrackingConfig) -> None:
    """Set `config.run_name` to the run `config.resume` asks for: a run name as given, or with `True` the newest
    run of the same experiment directly under `log_dir` (a sweep's nested trials are not candidates: a run is
    resumed where it lives). Nothing to resume leaves the generated name (logged)."""
    if not config.resume:
        return
    if isinstance(config.resume, str):
        config.run_name = config.resume
        return
    log_dir = Path(config.log_dir)
    for run_dir in list_runs(log_dir):
        if run_dir.parent != log_dir:
            continue
        try:
            with RunStore(run_dir) as store:
                experiment = store.meta().get("experiment_name")
        except Exception:  # an unreadable run is not the one to resume
            continue
        if experiment == config.experiment_name:
            config.run_name = run_dir.name
            log.info("resuming run %s", config.run_name)
            return
    log.info("resume=True but no earlier run of %r under %s: starting %s", config.experiment_name,
             config.log_dir, config.run_name)


# ---- one run name on every rank ------------------------------------------------------------------------------
_RUN_NAMES = RankZeroChannel("run_name")


def settle_run_name(config: TrackingConfig, rank: int) -> None:
    """Resolve `config.resume` on rank 0 and make every rank use rank 0's run name.

    A given name (or `resume="name"`) is the same everywhere already. A generated one (or the run `resume=True`
    finds) is rank 0's: rank 0 publishes it and goes on; another rank waits for it (`RankZeroChannel`: torchrun's
    store, before or after `init_process_group`; another launcher's once `init_process_group` has run). The n-th
    tracker of an experiment on one rank gets the name of the n-th on rank 0.

    Raises:
        RuntimeError: on a non-zero rank that has no store to learn the name from (a launcher other than torchrun,
            before `init_process_group`), naming the ways out.
    """
    shared = config.run_name_generated or config.resume is True
    if get_world_size() <= 1 or not shared:
        if rank == 0:
            resume_run_name(config)
        return
    key = f"{config.experiment_name}/{next_index('run_name/' + config.experiment_name)}"
    if rank == 0:
        resume_run_name(config)
        _RUN_NAMES.publish(key, str(config.run_name))
        return
    name = _RUN_NAMES.receive(key, f"the run name of its tracker for experiment {config.experiment_name!r}")
    if name is None:
        how = "with resume=True" if config.resume is True else "generated"
        raise RuntimeError(
            f"run_name: rank {rank} of {get_world_size()} cannot learn rank 0's run name ({how}): this process was "
            "not started by torchrun and torch.distributed is not initialised yet. Call "
            "torch.distributed.init_process_group() before creating the tracker, or pass the same run_name (or "
            "resume='<run name>') on every rank")
    if config.run_name_generated:
        config.use_generated_run_name(name)
    else:
        config.run_name = name


# ---- ending runs the script did not close ---------------------------------------------------------------------
_OPEN: weakref.WeakSet[OpenRun] = weakref.WeakSet()
_handlers_installed = False
_uncaught: list[str] = []  # the uncaught exception the interpreter is exiting with, as "TypeName: message"


def register(run: OpenRun) -> None:
    """Close `run` at exit or on SIGTERM unless it is closed before; installs the handlers on first use."""
    global _handlers_installed
    _OPEN.add(run)
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(close_all)
    previous_hook = sys.excepthook

    def on_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        # The interpreter calls this for the exception a script dies with, then runs atexit (which closes
        # the runs as failed). At an interactive prompt it is called for every error and the session goes on.
        if not hasattr(sys, "ps1"):
            _uncaught.append(describe(exc))
        previous_hook(exc_type, exc, tb)

    sys.excepthook = on_uncaught
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            close_all("failed", "SIGTERM: the process was terminated")
            if callable(previous):
                previous(signum, frame)
            else:  # default action: die by SIGTERM, as the sender expects
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)


def unregister(run: OpenRun) -> None:
    """`run` was closed: nothing left to do for it at exit."""
    _OPEN.discard(run)


def close_all(status: RunStatus | None = None, error: str | None = None) -> None:
    """End every run still open; at exit (`status` None) "failed" if the script died of an uncaught exception."""
    if status is None:
        status = "failed" if _uncaught else "finished"
        error = _uncaught[-1] if _uncaught else None
    for run in list(_OPEN):
        try:
            run._finish(status, error)
        except Exception:  # at exit, close what can be closed
            log.exception("closing tracker %s failed", run.run_name)


def _after_fork_in_child() -> None:
    for run in list(_OPEN):
        run._abandon_after_fork()
    _OPEN.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
