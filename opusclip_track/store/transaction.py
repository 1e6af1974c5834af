"""The writer's transaction: BEGIN IMMEDIATE ... COMMIT, undone completely when anything in it fails."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable


class Transaction:
    """BEGIN ... COMMIT on an autocommit connection (rollback on error), retrying a locked database.

    `lock` keeps another thread using the same connection out of the transaction. A failed transaction
    leaves nothing behind: key ids cached during it are forgotten (their rows were rolled back), the writer's
    state is reloaded from what is committed (`on_rollback`), and a COMMIT that fails (a full disk) is
    rolled back too. SQLite may already have rolled back by itself (it does on
    SQLITE_FULL), so ROLLBACK is only sent while a transaction is open.
    """

    def __init__(self, conn: sqlite3.Connection, key_ids: dict[str, int], on_rollback: Callable[[], None],
                 lock: threading.RLock) -> None:
        self._conn = conn
        self._key_ids = key_ids
        self._on_rollback = on_rollback
        self._lock = lock
        self._known = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._begin()
        except BaseException:
            self._lock.release()
            raise

    def _begin(self) -> None:
        self._known = len(self._key_ids)
        for attempt in range(50):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:  # a reader holding a lock; wait briefly
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.02)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._conn.execute("COMMIT")
                    return
                except BaseException:
                    self._rollback()
                    raise
            self._rollback()
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        for key in list(self._key_ids)[self._known:]:  # dicts keep insertion order: the keys added here
            del self._key_ids[key]
        with contextlib.suppress(sqlite3.Error):  # a store that cannot even be read keeps its last state
            self._on_rollback()
