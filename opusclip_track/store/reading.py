"""Opening a run's store for reading, for those who read many runs (`opusclip-track runs`, `sync`, the report):
a store SQLite cannot read is one `UnreadableRunError` naming the file and why, never a traceback."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .run_store import RunStore
from .runs import DB_NAME


class UnreadableRunError(ValueError):
    """A run directory whose `run.db` is not a readable run store (empty, corrupt, not SQLite); SQLite's own error
    is its `__cause__`."""


@contextlib.contextmanager
def open_run(run_dir: str | Path) -> Iterator[RunStore]:
    """The run's store for reading, closed at the end of the `with` block.

    Raises:
        UnreadableRunError: SQLite cannot read it (when opened or while read in the block).
        FileNotFoundError: the directory holds no `run.db`.

    Example:
        >>> with open_run("runs/my-run") as store:              # doctest: +SKIP
        ...     print(store.meta()["status"])
    """
    run_dir = Path(run_dir)
    try:
        with RunStore(run_dir) as store:
            yield store
    except sqlite3.DatabaseError as error:  # "file is not a database", "no such table: meta", ...
        raise UnreadableRunError(f"{run_dir / DB_NAME}: not a readable run store ({error})") from error
