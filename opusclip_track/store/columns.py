"""Per-key columnar chunks of scalars and their running statistics: numpy and zlib, no SQLite here.

A chunk holds one key's values from one compaction of the store's tail, in logging order, as four int64
columns: the global sequence number (logging order across keys), the step, the wall time and the value. The
floats travel as their IEEE-754 bits (`view(np.int64)`), so a chunk gives back exactly what was logged, NaN
payloads and -0.0 included: the store is the faithful record, float64 stays float64.

Encoding, measured on a training run's shapes (20 keys; per scalar, before zlib 32 bytes):

* sequence, step and wall time are delta-coded (integer differences, which wrap exactly): sequence and step
  deltas are constant along a key (0.04 B/scalar after zlib); wall-time bits grow by the step's duration in
  units of the last place (2.1 B/scalar);
* values are stored as they are: a loss that came from a float32 tensor has 29 zero mantissa bits
  (3.6 B/scalar), full-precision float64 noise needs 7 B/scalar; XOR- or delta-coding them measured no better;
* the 32 byte planes (byte i of every value of a column, one after the other) are separated so that zlib
  sees the slowly changing high bytes together, and planes that hold one byte throughout (the zero high
  bytes of deltas, the zero low bytes of float32-born values) are not compressed at all, only named in the
  header: that halves the bytes zlib has to read, which is most of the cost of compacting.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_HEADER = struct.Struct("<BII32s")  # format version, number of values, mask of constant planes, their bytes
_VERSION = 1
_PLANES = 32  # 4 columns x 8 bytes
# zlib level 1 with run-length matching only (Z_RLE): on a training run's planes it measured 0.6x the time of
# level 1's default strategy for 3% fewer bytes (level 6: 2.3x the time for 7% fewer bytes).
ZLIB_LEVEL, ZLIB_STRATEGY = 1, zlib.Z_RLE


def encode(seq: np.ndarray, steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> bytes:
    """One chunk: the four columns (same length, logging order) as one compressed blob."""
    n = int(seq.size)
    columns = np.empty((4, n), dtype=np.int64)
    _delta(seq, columns[0])
    _delta(steps, columns[1])
    _delta(np.ascontiguousarray(walls, dtype=np.float64).view(np.int64), columns[2])
    columns[3] = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    planes = columns.view(np.uint8).reshape(4, n, 8).transpose(0, 2, 1).reshape(_PLANES, n)
    first = planes[:, 0] if n else np.zeros(_PLANES, dtype=np.uint8)
    constant = (planes == first[:, None]).all(axis=1)
    mask = int(np.packbits(constant, bitorder="little").view("<u4")[0])
    packer = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 8, ZLIB_STRATEGY)
    body = packer.compress(np.ascontiguousarray(planes[~constant]).tobytes()) + packer.flush()
    return _HEADER.pack(_VERSION, n, mask, first.tobytes()) + body


def decode(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(seq int64, steps int64, walls float64, values float64)` of one chunk."""
    version, n, mask, first = _HEADER.unpack_from(blob)
    if version != _VERSION or not n:
        raise ValueError(f"run store chunk: expected format version {_VERSION} and values, received version "
                         f"{version} with {n} values (a store written by a newer opusclip-track?)")
    constant = np.unpackbits(np.frombuffer(struct.pack("<I", mask), dtype=np.uint8), bitorder="little").astype(bool)
    planes = np.empty((_PLANES, n), dtype=np.uint8)
    planes[constant] = np.frombuffer(first, dtype=np.uint8)[constant, None]
    planes[~constant] = np.frombuffer(zlib.decompress(blob[_HEADER.size:]), dtype=np.uint8).reshape(-1, n)
    columns = np.ascontiguousarray(planes.reshape(4, 8, n).transpose(0, 2, 1)).view(np.int64).reshape(4, n)
    seq, steps, wall_bits = (np.cumsum(c) for c in columns[:3])
    return seq, steps, wall_bits.view(np.float64), columns[3].view(np.float64)


def _delta(x: np.ndarray, out: np.ndarray) -> None:
    """`out[0] = x[0]`, `out[i] = x[i] - x[i-1]` in int64 (wrapping, so `np.cumsum` restores `x` exactly)."""
    if x.size:
        out[0] = x[0]
        np.subtract(x[1:], x[:-1], out=out[1:])


@dataclass(slots=True)
class Stats:
    """Running statistics of one key's values, in logging order: what `KeySummary` is made of. `min`, `max`,
    `sum` and `finite` cover finite values only (min/max NaN while there is none)."""

    count: int
    first_step: int
    last_step: int
    last_value: float
    last_wall: float
    min: float
    max: float
    sum: float
    finite: int
    max_step: int

    def then(self, later: Stats) -> Stats:
        """These statistics followed by `later`'s (values logged after these)."""
        return Stats(self.count + later.count, self.first_step, later.last_step, later.last_value, later.last_wall,
                     _fmin(self.min, later.min), _fmax(self.max, later.max), self.sum + later.sum,
                     self.finite + later.finite, max(self.max_step, later.max_step))

    def row(self) -> tuple[int, int, int, float, float, float | None, float | None, float, int, int]:
        """As stored in SQLite (which stores a NaN as NULL; `Stats.of_row` turns it back)."""
        return (self.count, self.first_step, self.last_step, self.last_value, self.last_wall,
                None if math.isnan(self.min) else self.min, None if math.isnan(self.max) else self.max,
                self.sum, self.finite, self.max_step)

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Stats:
        count, first, last, last_value, last_wall, low, high, total, finite, max_step = row
        return cls(int(count), int(first), int(last), _float(last_value), _float(last_wall), _float(low),
                   _float(high), _float(total), int(finite), int(max_step))


# The SQL columns of `Stats.row()`, in its order (in `scalar_chunks` and `scalar_summary`).
STATS_COLUMNS = "n, first_step, last_step, last_value, last_wall, vmin, vmax, vsum, finite, max_step"


@dataclass(frozen=True)
class KeySummary:
    """One scalar key of a run at a glance (what `runs show` and `runs compare` print).

    Attributes:
        count: values logged (superseded ones, from before a resume, not counted).
        first_step: step of the first value logged.
        last_step: step of the last value logged.
        last_value: the last value logged (NaN stays NaN).
        min: smallest finite value; NaN when there is none.
        max: largest finite value; NaN when there is none.
        mean: mean of the finite values; NaN when there is none.
        last_wall_time: wall time (Unix seconds) of the last value logged.
    """

    count: int
    first_step: int
    last_step: int
    last_value: float
    min: float
    max: float
    mean: float
    last_wall_time: float

    @classmethod
    def of(cls, stats: Stats) -> KeySummary:
        mean = stats.sum / stats.finite if stats.finite else math.nan
        return cls(stats.count, stats.first_step, stats.last_step, stats.last_value, stats.min, stats.max, mean,
                   stats.last_wall)


def group_by_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(order, starts, key_of_group)`: `keys[order]` groups each key's rows together, in their original
    (logging) order inside the group; group g is `order[starts[g]:starts[g + 1]]`."""
    order = np.argsort(keys, kind="stable")
    grouped = keys[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if keys.size else np.zeros(0, np.int64)
    return order, starts, grouped[starts]


def group_stats(starts: np.ndarray, steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> list[Stats]:
    """The `Stats` of each group of already grouped columns (`group_by_key`'s order applied)."""
    if not starts.size:
        return []
    ends = np.r_[starts[1:], values.size] - 1
    finite = np.isfinite(values)
    lows = np.minimum.reduceat(np.where(finite, values, np.inf), starts)
    highs = np.maximum.reduceat(np.where(finite, values, -np.inf), starts)
    with np.errstate(over="ignore"):  # finite values near float64's limit sum to inf: the mean is then inf
        sums = np.add.reduceat(np.where(finite, values, 0.0), starts)
    counts = np.add.reduceat(finite.astype(np.int64), starts)
    max_steps = np.maximum.reduceat(steps, starts)
    lows[counts == 0] = highs[counts == 0] = np.nan
    return [Stats(int(e - s + 1), first, last, value, wall, low, high, total, fin, top) for s, e, first, last, value,
            wall, low, high, total, fin, top in zip(starts.tolist(), ends.tolist(), steps[starts].tolist(),
                                                    steps[ends].tolist(), values[ends].tolist(), walls[ends].tolist(),
                                                    lows.tolist(), highs.tolist(), sums.tolist(), counts.tolist(),
                                                    max_steps.tolist(), strict=True)]


def _fmin(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _fmax(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
