"""The sorted windows the loss-spike and throughput rules keep per key, and the loss-spike rule's threshold floor."""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Sequence


class Window:
    """The last `size` values, also kept sorted: the median costs O(1), an append a memmove."""

    __slots__ = ("size", "values", "ordered", "added")

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: collections.deque[float] = collections.deque()
        self.ordered: list[float] = []
        self.added = 0  # values added since `SpikeWindow` last bounded its threshold

    def __len__(self) -> int:
        return len(self.values)

    def add(self, value: float) -> None:
        if len(self.values) == self.size:
            del self.ordered[bisect.bisect_left(self.ordered, self.values.popleft())]
        self.values.append(value)
        bisect.insort(self.ordered, value)
        self.added += 1

    def median(self) -> float:
        return _median(self.ordered)

    def mad(self, median: float) -> float:
        """The median absolute deviation from `median` (4 us for 100 values, measured)."""
        return _median(_distances(self.ordered, median, median))


class SpikeWindow(Window):
    """A loss key's window and a floor under its alert threshold (median + k x 1.4826 x MAD) that holds while at
    most `slack` more values are added: a value at or below the floor cannot be a spike, so the exact median and
    MAD are computed only for a value above it. The floor costs about a MAD and is worked out again every `slack`
    values (a tenth of the window), so a loss value costs about 1 us instead of 4 to 10.

    Why it holds: after at most r values are added (and as many of the oldest dropped), each order statistic of
    the window moves by at most r ranks, so the median lies in [low, high], the window's order statistics r ranks
    below and above its median now. A value kept is then at least its distance to [low, high] from the median, and
    an added value at least 0 from it, so the MAD is at least the order statistic r ranks below the middle of those
    distances, and the threshold at least `low` plus `scale` times that.
    """

    __slots__ = ("scale", "floor", "slack")

    def __init__(self, size: int, scale: float) -> None:
        super().__init__(size)
        self.scale = scale  # k x 1.4826
        self.floor = -math.inf
        self.slack = -1  # how many added values the floor holds for; none yet

    def cannot_spike(self, value: float) -> bool:
        """Whether `value` is at or below the threshold of every window reachable before the next refresh."""
        if self.added > self.slack:
            self.slack, self.added = max(1, len(self.ordered) // 10), 0
            self.floor = self._threshold_floor()
        return value <= self.floor

    def _threshold_floor(self) -> float:
        ordered, slack = self.ordered, self.slack
        n = len(ordered)
        rank = (n + 1) // 2 - slack  # 1-based: the lower median's, `slack` ranks down
        if rank < 1:
            return -math.inf
        low = ordered[rank - 1]
        high = ordered[n // 2 + slack] if n // 2 + slack < n else math.inf
        floor = low + self.scale * _distances(ordered, low, high)[rank - 1]
        return floor - 1e-12 * (abs(low) + abs(floor))  # the exact test's rounding cannot cross it


def _distances(ordered: list[float], low: float, high: float) -> list[float]:
    """Each of the sorted `ordered` values' distance to [low, high], sorted. The distances below `low` and above
    `high` are two sorted runs, which `sorted` merges in linear time (one plain sort took 1.5x as long)."""
    start, stop = bisect.bisect_left(ordered, low), bisect.bisect_right(ordered, high)
    inside = [0.0] * (stop - start)
    return sorted(inside + [low - v for v in reversed(ordered[:start])] + [v - high for v in ordered[stop:]])


def _median(ordered: Sequence[float]) -> float:
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


__all__ = ["SpikeWindow", "Window"]
