"""A run's life in its process: which earlier run it resumes when it opens, and how it ends when the script does
not close it (at exit, on SIGTERM, after an uncaught exception) or when the process forks.

* `resume_run_name` turns `TrackingConfig(resume=...)` into the run name to open.
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
