"""Shape-preserving downsampling of curves for display, on numpy arrays (no per-point Python loop).

A chart 600 px wide cannot show a million points, but plain striding (every k-th point) hides exactly what a
researcher looks for: a single loss spike falls between the kept points. `minmax_downsample` keeps, in every
one of `buckets` equal-width step intervals, the point with the smallest and the one with the largest value,
so every spike and every dip survives and the drawn envelope is the true one (M4/min-max aggregation, as
Plotly-Resampler and TensorBoard's successors do). `bucket_mean` gives the per-bucket means that smoothing
runs on, so a smoothing weight means the same on a 1,000-step and a 1,000,000-step run (TensorBoard smooths
its ~1,000 sampled points in the same way).

Both are plain functions of numpy arrays, in a leaf module (it imports nothing of the package), so the run
store (`RunStore.history_arrays(key, max_points=...)`) and the report share them. `downsample_indices` is what
the store uses: which points of a series to keep, non-finite ones included, in the order given.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bucket_mean", "check_max_points", "downsample_indices", "ema", "minmax_downsample", "minmax_indices"]


def _sorted_finite(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{name}: expected x and y of the same length, received {x.size} and {y.size}")
    keep = np.isfinite(y) & np.isfinite(x)
    if not keep.all():
        x, y = x[keep], y[keep]
    if x.size > 1 and np.any(x[1:] < x[:-1]):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
    return x, y


def _buckets(x: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Start index of every non-empty bucket and each point's segment number (x sorted, x[0] < x[-1])."""
    index = ((x - x[0]) * (buckets / (x[-1] - x[0]))).astype(np.int64)
    np.minimum(index, buckets - 1, out=index)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    segment = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, x.size]))
    return starts, segment


def _first_in_segment(hits: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Index of the first True of `hits` in each segment (segments numbered in order)."""
    where = np.flatnonzero(hits)
    seg = segment[where]
    return where[np.r_[True, seg[1:] != seg[:-1]]]


def _check_buckets(buckets: int) -> None:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets: expected an int >= 1, received {buckets!r}")


def minmax_indices(x: np.ndarray, y: np.ndarray, buckets: int = 500) -> np.ndarray:
    """Indices (into `x` and `y` as given) of the points `minmax_downsample` keeps, in ascending x order.

    Args:
        x: the steps (any order).
        y: the values, same length; non-finite values are never kept.
        buckets: number of equal-width x intervals.
    """
    _check_buckets(buckets)
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"minmax_downsample: expected x and y of the same length, received {x.size} and {y.size}")
    index = np.flatnonzero(np.isfinite(y) & np.isfinite(x))
    x, y = x[index], y[index]
    if x.size > 1 and np.any(x[1:] < x[:-1]):
        order = np.argsort(x, kind="stable")
        index, x, y = index[order], x[order], y[order]
    if x.size <= 2 * buckets + 2:
        return index
    if x[0] == x[-1]:  # every point at one step: its extremes are all there is to see
        return index[np.unique([0, int(np.argmin(y)), int(np.argmax(y)), x.size - 1])]
    starts, segment = _buckets(x, buckets)
    lows = np.minimum.reduceat(y, starts)
    highs = np.maximum.reduceat(y, starts)
    first_low = _first_in_segment(y == lows[segment], segment)
    first_high = _first_in_segment(y == highs[segment], segment)
    return index[np.unique(np.concatenate([first_low, first_high, [0, x.size - 1]]))]


def minmax_downsample(x: np.ndarray, y: np.ndarray, buckets: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Keep the minimum and the maximum of each of `buckets` equal-width x intervals, plus the end points.

    Non-finite values (NaN, inf) are dropped: they cannot be drawn (count or mark them separately). Points
    are returned sorted by x; at most `2 * buckets + 2` of them. A series that is already that short comes
    back whole.

    Args:
        x: the steps (any order; sorted stably when they are not).
        y: the values, same length.
        buckets: number of intervals, e.g. the chart's width in pixels.

    Returns:
        `(x, y)` float64 arrays of the kept points.

    Example:
        >>> x = np.arange(1_000_000.0); y = np.zeros_like(x); y[123_457] = 9.0
        >>> xs, ys = minmax_downsample(x, y, 500)
        >>> len(xs) <= 1002, ys.max()
        (True, 9.0)
    """
    keep = minmax_indices(x, y, buckets)
    return (np.asarray(x, dtype=np.float64).ravel()[keep], np.asarray(y, dtype=np.float64).ravel()[keep])


def check_max_points(max_points: int) -> None:
    """Raise `ValueError` naming `max_points` unless it is an int >= 4 (two ends and a bucket's min and max)."""
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 4:
        raise ValueError(f"max_points: expected an int >= 4 (or None for every point), received {max_points!r}")


def downsample_indices(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` points of a series that keep its shape, ascending (the order given).

    Finite values: the minimum and maximum of each equal-width x interval (`minmax_indices`), so no spike or
    dip is lost. Non-finite values (NaN, +/-inf), which a chart marks rather than draws: the first of each
    interval, so where a run diverged stays visible. Without non-finite values, `(max_points - 2) // 2`
    intervals; with them, `(max_points - 2) // 3` (a third of the points is theirs at most). A series of at
    most `max_points` points is kept whole.

    Raises:
        ValueError: `max_points` is not an int >= 4.
    """
    check_max_points(max_points)
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size <= max_points:
        return np.arange(y.size)
    bad = np.flatnonzero(~np.isfinite(y))
    buckets = (max_points - 2) // (3 if bad.size else 2)
    keep = minmax_indices(x, y, buckets)
    if bad.size > buckets:
        bx = x[bad]
        order = np.argsort(bx, kind="stable")
        bad, bx = bad[order], bx[order]
        if bx[0] == bx[-1]:
            bad = bad[:1]
        else:
            starts, _ = _buckets(bx, buckets)
            bad = bad[starts]
    return np.union1d(keep, bad)


def bucket_mean(x: np.ndarray, y: np.ndarray, buckets: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The mean step and mean value of each non-empty of `buckets` equal-width x intervals (finite values).

    A series of at most `buckets` points comes back whole (sorted by x, non-finite values dropped).
    """
    _check_buckets(buckets)
    x, y = _sorted_finite(x, y, "bucket_mean")
    if x.size <= buckets or x[0] == x[-1]:
        return x, y
    starts, _ = _buckets(x, buckets)
    counts = np.diff(np.r_[starts, x.size])
    return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts


def ema(y: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average: `s = w * s + (1 - w) * y`, divided by `1 - w**(i+1)`
    so the first points are not pulled towards 0. Meant for display-sized series (`bucket_mean` output): it is a
    running recurrence, one step per point.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < 1:
        raise ValueError(f"weight: expected a number in [0, 1), received {weight!r}")
    values = np.asarray(y, dtype=np.float64)
    out = np.empty_like(values)
    last = 0.0
    for i, value in enumerate(values.tolist()):
        last = weight * last + (1.0 - weight) * value
        out[i] = last / (1.0 - weight ** (i + 1))
    return out
