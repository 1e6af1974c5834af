"""The local run store: one SQLite database per run (`runs/<run>/run.db`), the write-ahead source of truth.

`RunStore` reads and writes one run (layout and guarantees in `run_store.py`); `list_runs` and `find_run`
find runs under a log directory. Scalars are kept per key in compressed columnar chunks with a small
write-ahead tail (`columns.py`); stores of the earlier row-per-scalar format read as they are (`legacy.py`).
"""

from .columns import KeySummary, Stats
from .run_store import STORE_FORMAT, TAIL_SCALARS, RunStore
from .runs import DB_NAME, LOCK_NAME, RESERVE_BYTES, RESERVE_NAME, RunLockedError, find_run, list_runs

__all__ = ["DB_NAME", "LOCK_NAME", "RESERVE_BYTES", "RESERVE_NAME", "STORE_FORMAT", "TAIL_SCALARS", "KeySummary",
           "RunLockedError", "RunStore", "Stats", "find_run", "list_runs"]
