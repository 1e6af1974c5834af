"""Statistics over seeds: per-group summaries with t confidence intervals, Welch's t-test between two groups,
Hedges' g, and the sentence a reader takes away.

A run contributes one number per metric (its final value). Runs whose value is not finite (a diverged run's
NaN loss) are left out of the numbers and listed as excluded, never silently. A group of one run has a mean but
no spread: it gets no standard deviation, no interval and no test, and says so.

Definitions (two-sided, confidence 0.95 by default):

* group interval: `mean +- t(1 - alpha/2, n - 1) * s / sqrt(n)`, `s` the sample standard deviation (ddof 1);
* Welch's t-test (`scipy.stats.ttest_ind(..., equal_var=False)`) and the interval of the difference of means
  with the Welch-Satterthwaite degrees of freedom;
* effect size: Hedges' g, Cohen's d with the pooled standard deviation times the small-sample correction
  `J = 1 - 3 / (4 (n_a + n_b) - 9)` (less biased than d for the 3-5 seeds a video model gets).

scipy is imported when a number is computed, not when this module is imported (`import scipy.stats` takes
0.5-1.5 s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from opusclip_track.metrics.names import HIGHER_IS_BETTER

__all__ = [
    "Comparison", "GroupSummary", "Direction", "compare_groups", "describe_comparison", "direction", "hedges_g",
    "summarize", "unit",
]

Direction = Literal["higher", "lower"]

_LOSS_LIKE = re.compile(r"loss|mse|mae|nll|error|perplexity", re.IGNORECASE)


def direction(key: str) -> Direction | None:
    """Which way `key` is better: video metrics as `opusclip_track.metrics.names.HIGHER_IS_BETTER` says, loss-like
    keys lower.

    Example:
        >>> direction("video/psnr"), direction("val/loss"), direction("sys/cpu_percent")
        ('higher', 'lower', None)
    """
    name = key.rsplit("/", 1)[-1]
    if name in HIGHER_IS_BETTER:  # torch-free: the command line starts without loading the metrics
        better = HIGHER_IS_BETTER[name]
        return None if better is None else "higher" if better else "lower"
    return "lower" if _LOSS_LIKE.search(name) else None


def unit(key: str) -> str:
    """The unit a value of `key` is read in ("dB" for PSNR), or ""."""
    return "dB" if key.rsplit("/", 1)[-1] == "psnr" else ""


@dataclass(frozen=True)
class GroupSummary:
    """One group's final values of one metric.

    Attributes:
        n: runs with a finite value.
        mean: their mean (None when n == 0).
        std: sample standard deviation, ddof 1 (None when n < 2).
        sem: standard error of the mean (None when n < 2).
        ci_low, ci_high: the t interval of the mean at `confidence` (None when n < 2).
        values: run name -> the value used.
        excluded: run name -> a value left out because it is not finite ("nan", "inf").
        note: why a number is missing, in words.
    """

    n: int
    mean: float | None
    std: float | None
    sem: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    values: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_confidence(confidence: float) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), received {confidence!r}")


def summarize(values: Mapping[str, float], confidence: float = 0.95) -> GroupSummary:
    """Mean, standard deviation and t confidence interval of one group's values (run name -> value).

    Example:
        >>> s = summarize({"a": 1.0, "b": 2.0, "c": 3.0})
        >>> s.n, s.mean, s.std, round(s.ci_low, 3), round(s.ci_high, 3)
        (3, 2.0, 1.0, -0.484, 4.484)
    """
    _check_confidence(confidence)
    used = {run: float(v) for run, v in values.items() if math.isfinite(float(v))}
    excluded = {run: str(float(v)) for run, v in values.items() if run not in used}
    n = len(used)
    if n == 0:
        return GroupSummary(0, None, None, None, None, None, confidence, used, excluded, "no finite value")
    mean = math.fsum(used.values()) / n
    if n == 1:
        return GroupSummary(1, mean, None, None, None, None, confidence, used, excluded,
                            "n=1: one run has no spread, so no standard deviation and no interval")
    from scipy import stats

    std = math.sqrt(math.fsum((v - mean) ** 2 for v in used.values()) / (n - 1))
    sem = std / math.sqrt(n)
    if sem == 0.0:
        return GroupSummary(n, mean, 0.0, 0.0, mean, mean, confidence, used, excluded,
                            "every run has the same value")
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return GroupSummary(n, mean, std, sem, float(low), float(high), confidence, used, excluded)


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Hedges' g of `a` against `b`: (mean_a - mean_b) / pooled sd, times 1 - 3 / (4 (n_a + n_b) - 9).

    None when either group has fewer than 2 values or the pooled standard deviation is 0.
    """
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    ma, mb = math.fsum(a) / na, math.fsum(b) / nb
    ssa = math.fsum((v - ma) ** 2 for v in a)
    ssb = math.fsum((v - mb) ** 2 for v in b)
    pooled = math.sqrt((ssa + ssb) / (na + nb - 2))
    if pooled == 0.0:
        return None
    return (ma - mb) / pooled * (1.0 - 3.0 / (4.0 * (na + nb) - 9.0))


@dataclass(frozen=True)
class Comparison:
    """Group `a` against group `b` on one metric; `diff` is mean_a - mean_b.

    `better` names the better group by the metric's direction (None when the direction is unknown or there is
    nothing to compare); `p`, `df`, `t`, `ci_low`/`ci_high` (of the difference) and `hedges_g` are None when
    the test is undefined, and `note` says why.
    """

    key: str
    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    df: float | None
    t: float | None
    p: float | None
    hedges_g: float | None
    direction: Direction | None
    better: str | None
    confidence: float
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_groups(key: str, a: str, values_a: Sequence[float], b: str, values_b: Sequence[float],
                   confidence: float = 0.95) -> Comparison:
    """Welch's t-test, the interval of the difference of means and Hedges' g, group `a` against `b`.

    Args:
        key: the metric (its direction decides which group is better).
        a, b: the group names.
        values_a, values_b: the finite final values of each group's runs.
        confidence: of the interval of the difference.
    """
    _check_confidence(confidence)
    na, nb = len(values_a), len(values_b)
    mean_a = math.fsum(values_a) / na if na else None
    mean_b = math.fsum(values_b) / nb if nb else None
    diff = None if mean_a is None or mean_b is None else mean_a - mean_b
    way = direction(key)
    base = dict(key=key, a=a, b=b, n_a=na, n_b=nb, mean_a=mean_a, mean_b=mean_b, diff=diff, direction=way,
                confidence=confidence)
    small = [f"{name} has n={n}" for name, n in ((a, na), (b, nb)) if n < 2]
    if small:
        return Comparison(**base, ci_low=None, ci_high=None, df=None, t=None, p=None, hedges_g=None,  # type: ignore[arg-type]
                          better=_better(way, a, b, diff), note=f"no test: {' and '.join(small)}, and a t-test needs "
                          "at least 2 runs per group")
    var_a = math.fsum((v - mean_a) ** 2 for v in values_a) / (na - 1)  # type: ignore[operator]
    var_b = math.fsum((v - mean_b) ** 2 for v in values_b) / (nb - 1)  # type: ignore[operator]
    if var_a == 0.0 and var_b == 0.0:
        return Comparison(**base, ci_low=None, ci_high=None, df=None, t=None, p=None, hedges_g=None,  # type: ignore[arg-type]
                          better=_better(way, a, b, diff),
                          note="no test: every run of both groups has the same value (no spread)")
    from scipy import stats

    result = stats.ttest_ind(list(values_a), list(values_b), equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(**base, ci_low=float(interval.low), ci_high=float(interval.high),  # type: ignore[arg-type]
                      df=float(result.df), t=float(result.statistic), p=float(result.pvalue),
                      hedges_g=hedges_g(values_a, values_b), better=_better(way, a, b, diff))


def _better(way: Direction | None, a: str, b: str, diff: float | None) -> str | None:
    if way is None or diff is None or diff == 0.0:
        return None
    return a if (diff > 0) == (way == "higher") else b


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}" if p < 0.01 else f"p={p:.2f}"


def describe_comparison(c: Comparison) -> str:
    """The comparison in one sentence, e.g. "transformer beats unet on video/psnr by 0.41 dB, 95% CI [0.12,
    0.70], p=0.01, n=3 vs 3". The gap is |mean_a - mean_b| and the interval is that of the gap (the leader's
    mean minus the other's, lower-is-better metrics included)."""
    if c.diff is None:
        return f"{c.key}: nothing to compare ({c.a} n={c.n_a}, {c.b} n={c.n_b})"
    u = f" {unit(c.key)}" if unit(c.key) else ""
    sign = 1.0 if c.diff >= 0 else -1.0
    high_group, low_group = (c.a, c.b) if sign > 0 else (c.b, c.a)
    if c.better is not None:
        leader = c.better
        other = c.b if leader == c.a else c.a
        verb = "beats" if c.p is not None and c.p < 1 - c.confidence else "is ahead of"
    elif c.diff == 0:
        leader, other, verb = c.a, c.b, "equals"
    else:
        leader, other, verb = high_group, low_group, "is higher than"
    counts = f"n={c.n_a} vs {c.n_b}" if leader == c.a else f"n={c.n_b} vs {c.n_a}"
    text = f"{leader} {verb} {other} on {c.key}"
    if c.diff != 0:
        text += f" by {_num(abs(c.diff))}{u}"
        if c.direction is None:
            text += " (no better direction is known for this metric)"
    if c.ci_low is not None and c.ci_high is not None and c.p is not None:
        low, high = sorted((sign * c.ci_low, sign * c.ci_high))
        text += f", {round(c.confidence * 100):g}% CI [{_num(low)}, {_num(high)}], {_p(c.p)}"
        if c.p >= 1 - c.confidence:
            text += " (not significant)"
    text += f", {counts}"
    if c.note:
        text += f"; {c.note}"
    return text
