"""The local run store: one SQLite database per run (`runs/<run>/run.db`), the write-ahead source of truth.

`RunStore` reads and writes one run (layout and guarantees in `run_store.py`); `list_runs` and `find_run`
find runs under a log directory, `open_run` opens one for reading (`UnreadableRunError` for a damaged one).
Scalars are kept per key in compressed columnar chunks with a small write-ahead tail (`columns.py`); stores of
the earlier row-per-scalar format read as they are (`legacy.py`). What readers make of a run: its settings and
where several runs' differ (`run_settings`, `config_diff`), its health problems (`health_problems`).
"""

from .columns import KeySummary, Stats
from .health import health_problems
from .reading import UnreadableRunError, open_run
from .run_store import STORE_FORMAT, TAIL_SCALARS, RunStore
from .runs import DB_NAME, LOCK_NAME, RESERVE_BYTES, RESERVE_NAME, RunLockedError, find_run, list_runs
from .settings import ConfigDiff, config_diff, run_settings, setting

__all__ = ["DB_NAME", "LOCK_NAME", "RESERVE_BYTES", "RESERVE_NAME", "STORE_FORMAT", "TAIL_SCALARS", "ConfigDiff",
           "KeySummary", "RunLockedError", "RunStore", "Stats", "UnreadableRunError", "config_diff", "find_run",
           "health_problems", "list_runs", "open_run", "run_settings", "setting"]
