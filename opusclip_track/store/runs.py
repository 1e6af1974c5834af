"""Where runs are (`list_runs`, `find_run`) and the files a writer holds beside its store: the run lock and the
reserve file."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

DB_NAME = "run.db"
LOCK_NAME = "run.lock"
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024  # room for the final meta write on a full disk (a few 4 KiB pages in the WAL)


class RunLockedError(RuntimeError):
    """Another process (or another tracker in this one) is writing this run."""


def acquire_lock(run_dir: Path) -> IO[str]:
    """Take the run's writer lock or raise `RunLockedError` naming the process that holds it."""
    handle = open(run_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the run's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        this = " (this process)" if holder == str(os.getpid()) else ""
        raise RunLockedError(
            f"run {run_dir.name!r} is already open for writing by process {holder}{this} (lock "
            f"{run_dir / LOCK_NAME}): one process writes a run at a time. Close that tracker first (resume "
            "the run afterwards with TrackingConfig(resume=...)), or pick another run_name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def make_reserve(path: Path) -> None:
    """Write the reserve file (real blocks, not a sparse file) unless it is already there (a resumed run)."""
    with contextlib.suppress(OSError):  # no room for it: the run still starts, without the reserve
        if not path.exists() or path.stat().st_size < RESERVE_BYTES:
            path.write_bytes(bytes(RESERVE_BYTES))


def list_runs(log_dir: str | Path = "runs") -> list[Path]:
    """Run directories under `log_dir` that hold a store, newest first, nested ones included
    (`runs/sweeps/<sweep>/<trial>/`). A run directory is not searched further (its `media/`, `wandb/`)."""
    found: list[Path] = []
    for parent, dirs, files in os.walk(log_dir):
        if DB_NAME in files:
            found.append(Path(parent))
            dirs.clear()
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found, key=_mtime, reverse=True)


def _mtime(run_dir: Path) -> float:
    try:
        return (run_dir / DB_NAME).stat().st_mtime
    except OSError:  # removed while listing
        return 0.0


def find_run(log_dir: str | Path, name: str | Path) -> Path:
    """The run directory `name` means: a path to a run directory (or its `run.db`), a run's name or its path
    relative to `log_dir` (`sweeps/lr/trial-003`), or an unambiguous prefix of either.

    Raises:
        FileNotFoundError: no run matches; the message lists the runs under `log_dir`.
        ValueError: a name or prefix that matches several runs; the message lists them.
    """
    log_dir = Path(log_dir)
    text = str(name)
    for candidate in (Path(name), log_dir / name):
        if candidate.name == DB_NAME and candidate.is_file():
            return candidate.parent
        if (candidate / DB_NAME).is_file():
            return candidate
    runs = list_runs(log_dir) if log_dir.is_dir() else []
    names = {run: run.relative_to(log_dir).as_posix() for run in runs}
    for matches in ([r for r in runs if text in (names[r], r.name)],
                    [r for r in runs if names[r].startswith(text) or r.name.startswith(text)]):
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f"RUN: {text!r} matches {len(matches)} runs under {log_dir}: "
                             f"{', '.join(sorted(names[r] for r in matches))}; give more of the name")
    raise FileNotFoundError(f"RUN: expected a run directory, a run name under {log_dir} or a prefix of one, "
                            f"received {text!r} (runs here: {', '.join(sorted(names.values())) or 'none'})")
