"""The columnar scalar format in SQL: the write-ahead tail, per-key chunks and the per-key summary rows.

Tables (created with the rest of the schema in `run_store.py`):

* `scalar_tail(seq, n, key_ids, steps, walls, vals)`: one row per written batch, its columns as raw int64 and
  float64 arrays. `seq` is the batch's first sequence number: a scalar's sequence number is its place in
  logging order across all keys.
* `scalar_chunks(id, key_id, gen, seq_lo, seq_hi, <stats>, data)`: one chunk per key and compaction (`gen`),
  `data` as `columns.encode` makes it, with the chunk's `Stats`. Every sequence number of one generation is
  below those of the next, and the tail's are above them all.
* `scalar_summary(key_id, <stats>)`: every key's `Stats`, rewritten with each batch that holds the key.

Every function here runs inside a transaction its caller holds (`RunStore` writes, or reads in one snapshot).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .columns import STATS_COLUMNS, Stats, decode, encode, group_by_key, group_stats

# Scalars the tail holds before it is compacted: ~8 MB of raw columns, ~0.1 s of compaction on the 2-core
# build machine (part of one batch's time, so of what a SIGKILL can lose), 13,000 points per chunk at 20 keys.
TAIL_SCALARS = 1 << 18

_STATS_SQL = ("n INTEGER NOT NULL, first_step INTEGER NOT NULL, last_step INTEGER NOT NULL, last_value REAL, "
              "last_wall REAL NOT NULL, vmin REAL, vmax REAL, vsum REAL, finite INTEGER NOT NULL, "
              "max_step INTEGER NOT NULL")
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS scalar_tail (seq INTEGER PRIMARY KEY, n INTEGER NOT NULL, key_ids BLOB NOT NULL,
                                        steps BLOB NOT NULL, walls BLOB NOT NULL, vals BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS scalar_chunks (id INTEGER PRIMARY KEY, key_id INTEGER NOT NULL, gen INTEGER NOT NULL,
                                          seq_lo INTEGER NOT NULL, seq_hi INTEGER NOT NULL, {_STATS_SQL},
                                          data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_key ON scalar_chunks (key_id, seq_lo);
CREATE INDEX IF NOT EXISTS chunks_by_gen ON scalar_chunks (gen);
CREATE TABLE IF NOT EXISTS scalar_summary (key_id INTEGER PRIMARY KEY, {_STATS_SQL});
"""
_MARKS = ", ".join("?" * len(STATS_COLUMNS.split(",")))
_UPSERT_SUMMARY = f"INSERT OR REPLACE INTO scalar_summary (key_id, {STATS_COLUMNS}) VALUES (?, {_MARKS})"

Columns = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class WriterState:
    """What the writer keeps between batches, all derived from the committed tables (`load`)."""

    seq: int = 1  # the next scalar's sequence number
    gen: int = 0  # the next compaction's generation
    tail: int = 0  # scalars in the tail
    stats: dict[int, Stats] = field(default_factory=dict)  # by key id, as in scalar_summary

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> WriterState:
        stats = {row[0]: Stats.of_row(row[1:]) for row in
                 conn.execute(f"SELECT key_id, {STATS_COLUMNS} FROM scalar_summary")}
        tail, tail_end = conn.execute("SELECT COALESCE(SUM(n), 0), MAX(seq + n) FROM scalar_tail").fetchone()
        chunk_end, gen = conn.execute("SELECT MAX(seq_hi) + 1, COALESCE(MAX(gen) + 1, 0) FROM scalar_chunks").fetchone()
        return cls(max(tail_end or 1, chunk_end or 1), int(gen), int(tail), stats)


def append(conn: sqlite3.Connection, state: WriterState, ids: np.ndarray, steps: np.ndarray, walls: np.ndarray,
           values: np.ndarray) -> None:
    """One batch's scalars (logging order): a tail row, and the new statistics of the keys it holds."""
    conn.execute("INSERT INTO scalar_tail VALUES (?, ?, ?, ?, ?, ?)",
                 (state.seq, ids.size, ids.tobytes(), steps.tobytes(), walls.tobytes(), values.tobytes()))
    state.seq += ids.size
    state.tail += ids.size
    order, starts, grouped = group_by_key(ids)
    rows = []
    for key_id, stats in zip(grouped.tolist(), group_stats(starts, steps[order], walls[order], values[order]),
                             strict=True):
        earlier = state.stats.get(key_id)
        stats = stats if earlier is None else earlier.then(stats)
        state.stats[key_id] = stats
        rows.append((key_id, *stats.row()))
    conn.executemany(_UPSERT_SUMMARY, rows)


def compact(conn: sqlite3.Connection, state: WriterState) -> None:
    """Move every scalar of the tail into per-key chunks of one new generation."""
    rows = conn.execute("SELECT seq, n, key_ids, steps, walls, vals FROM scalar_tail ORDER BY seq").fetchall()
    if rows:
        insert_chunks(conn, state, *tail_columns(rows))
        conn.execute("DELETE FROM scalar_tail")
    state.tail = 0


def insert_chunks(conn: sqlite3.Connection, state: WriterState, seq: np.ndarray, ids: np.ndarray, steps: np.ndarray,
                  walls: np.ndarray, values: np.ndarray) -> None:
    """One chunk per key of these scalars (logging order), all of generation `state.gen`, which ends."""
    order, starts, grouped = group_by_key(ids)
    seq, steps, walls, values = seq[order], steps[order], walls[order], values[order]
    ends = np.r_[starts[1:], seq.size].tolist()
    rows = [(key_id, state.gen, int(seq[lo]), int(seq[hi - 1]), *stats.row(),
             encode(seq[lo:hi], steps[lo:hi], walls[lo:hi], values[lo:hi]))
            for key_id, lo, hi, stats in zip(grouped.tolist(), starts.tolist(), ends,
                                             group_stats(starts, steps, walls, values), strict=True)]
    conn.executemany(f"INSERT INTO scalar_chunks (key_id, gen, seq_lo, seq_hi, {STATS_COLUMNS}, data) "
                     f"VALUES (?, ?, ?, ?, {_MARKS}, ?)", rows)
    state.gen += 1


def rewind(conn: sqlite3.Connection, state: WriterState, step: int) -> None:
    """Move every scalar at a step >= `step` into `superseded_scalars` (rows, as the first format kept them)."""
    compact(conn, state)
    touched = set()
    for chunk_id, key_id, blob in conn.execute("SELECT id, key_id, data FROM scalar_chunks WHERE max_step >= ?",
                                               (step,)).fetchall():
        seq, steps, walls, values = decode(blob)
        gone = steps >= step
        conn.executemany("INSERT INTO superseded_scalars VALUES (?, ?, ?, ?)",
                         ((key_id, s, w, v) for s, w, v in zip(steps[gone].tolist(), walls[gone].tolist(),
                                                               values[gone].tolist(), strict=True)))
        keep = ~gone
        if keep.any():
            seq, steps, walls, values = seq[keep], steps[keep], walls[keep], values[keep]
            (stats,) = group_stats(np.zeros(1, np.int64), steps, walls, values)
            conn.execute(f"UPDATE scalar_chunks SET ({STATS_COLUMNS}, seq_lo, seq_hi, data) = ({_MARKS}, ?, ?, ?) "
                         "WHERE id = ?", (*stats.row(), int(seq[0]), int(seq[-1]), encode(seq, steps, walls, values),
                                          chunk_id))
        else:
            conn.execute("DELETE FROM scalar_chunks WHERE id = ?", (chunk_id,))
        touched.add(key_id)
    for key_id in touched:
        refold(conn, state, key_id)


def refold(conn: sqlite3.Connection, state: WriterState, key_id: int) -> None:
    """A key's summary row from its chunks' statistics (the tail being empty)."""
    folded: Stats | None = None
    for row in conn.execute(f"SELECT {STATS_COLUMNS} FROM scalar_chunks WHERE key_id = ? ORDER BY seq_lo",
                            (key_id,)).fetchall():
        stats = Stats.of_row(row)
        folded = stats if folded is None else folded.then(stats)
    if folded is None:
        state.stats.pop(key_id, None)
        conn.execute("DELETE FROM scalar_summary WHERE key_id = ?", (key_id,))
    else:
        state.stats[key_id] = folded
        conn.execute(_UPSERT_SUMMARY, (key_id, *folded.row()))


# ---- reading --------------------------------------------------------------------------------------------------
def summary_stats(conn: sqlite3.Connection) -> dict[int, Stats]:
    return {row[0]: Stats.of_row(row[1:]) for row in
            conn.execute(f"SELECT key_id, {STATS_COLUMNS} FROM scalar_summary WHERE n > 0")}


def history(conn: sqlite3.Connection, key_id: int) -> Columns:
    """`(steps, walls, values)` of one key: its chunks, then its part of the tail."""
    parts = [decode(blob)[1:] for (blob,) in conn.execute(
        "SELECT data FROM scalar_chunks WHERE key_id = ? ORDER BY seq_lo", (key_id,))]
    _, ids, steps, walls, values = read_tail(conn)
    mine = ids == key_id
    parts.append((steps[mine], walls[mine], values[mine]))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def pieces(conn: sqlite3.Connection) -> Iterator[tuple[np.ndarray, ...]]:
    """`(key_ids, steps, walls, values)` of every scalar in logging order: one generation at a time, then the
    tail."""
    for (gen,) in conn.execute("SELECT DISTINCT gen FROM scalar_chunks ORDER BY gen").fetchall():
        chunks = conn.execute("SELECT key_id, data FROM scalar_chunks WHERE gen = ?", (gen,)).fetchall()
        decoded = [decode(blob) for _, blob in chunks]
        ids = np.concatenate([np.full(d[0].size, key_id) for (key_id, _), d in zip(chunks, decoded, strict=True)])
        seq, steps, walls, values = (np.concatenate([d[i] for d in decoded]) for i in range(4))
        order = np.argsort(seq, kind="stable")
        yield ids[order], steps[order], walls[order], values[order]
    yield read_tail(conn)[1:]


def read_tail(conn: sqlite3.Connection) -> tuple[np.ndarray, ...]:
    """`(seq, key_ids, steps, walls, values)` of every scalar in the tail, in logging order."""
    return tail_columns(conn.execute("SELECT seq, n, key_ids, steps, walls, vals FROM scalar_tail ORDER BY seq")
                        .fetchall())


def tail_columns(rows: list[Any]) -> tuple[np.ndarray, ...]:
    """`(seq, key_ids, steps, walls, values)` of `scalar_tail` rows (in `seq` order)."""
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), *empty()
    seq = np.concatenate([np.arange(first, first + n, dtype=np.int64) for first, n, *_ in rows])
    ids, steps, walls, values = (np.frombuffer(b"".join(row[i] for row in rows), dtype=dtype)
                                 for i, dtype in ((2, np.int64), (3, np.int64), (4, np.float64), (5, np.float64)))
    return seq, ids, steps, walls, values


def empty() -> Columns:
    return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
