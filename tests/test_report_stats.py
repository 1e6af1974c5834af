"""Statistics over seeds (`opusclip_track.report.stats`) against scipy and against the textbook formulas."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from opusclip_track.metrics.names import HIGHER_IS_BETTER, METRIC_NAMES
from opusclip_track.report import stats as report_stats
from opusclip_track.report.stats import (
    compare_groups,
    describe_comparison,
    direction,
    hedges_g,
    summarize,
)

A = [28.31, 28.64, 28.42, 28.55]
B = [27.93, 28.12, 27.98]


def test_a_group_summary_equals_scipy() -> None:
    s = summarize({f"run{i}": v for i, v in enumerate(A)})
    a = np.array(A)
    low, high = stats.t.interval(0.95, a.size - 1, loc=a.mean(), scale=stats.sem(a))
    assert (s.n, s.mean, s.std, s.sem) == (4, pytest.approx(a.mean()), pytest.approx(a.std(ddof=1)),
                                           pytest.approx(stats.sem(a)))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    s90 = summarize({f"run{i}": v for i, v in enumerate(A)}, confidence=0.9)
    assert s90.ci_high == pytest.approx(stats.t.interval(0.9, 3, loc=a.mean(), scale=stats.sem(a))[1], rel=1e-12)


def test_one_run_has_a_mean_but_no_spread_and_says_so() -> None:
    s = summarize({"only": 3.5})
    assert (s.n, s.mean, s.std, s.sem, s.ci_low, s.ci_high) == (1, 3.5, None, None, None, None)
    assert s.note is not None and "n=1" in s.note


def test_non_finite_values_are_excluded_and_listed() -> None:
    s = summarize({"a": 1.0, "b": math.nan, "c": 3.0, "d": math.inf})
    assert (s.n, s.mean, s.values, s.excluded) == (2, 2.0, {"a": 1.0, "c": 3.0}, {"b": "nan", "d": "inf"})
    empty = summarize({"b": math.nan})
    assert (empty.n, empty.mean, empty.note) == (0, None, "no finite value")


def _welch_by_hand(a: list[float], b: list[float], confidence: float) -> tuple[float, float, float]:
    """Welch-Satterthwaite df and the interval of mean(a) - mean(b), written out from the textbook."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    return df, diff - half, diff + half


def test_welch_test_interval_and_hedges_g_equal_scipy_and_the_formulas() -> None:
    c = compare_groups("video/psnr", "transformer", A, "unet", B)
    welch = stats.ttest_ind(A, B, equal_var=False)
    df, low, high = _welch_by_hand(A, B, 0.95)
    assert (c.p, c.t, c.df) == (pytest.approx(welch.pvalue, rel=1e-12), pytest.approx(welch.statistic, rel=1e-12),
                                pytest.approx(df, rel=1e-12))
    assert (c.ci_low, c.ci_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    pooled = math.sqrt(((len(A) - 1) * np.var(A, ddof=1) + (len(B) - 1) * np.var(B, ddof=1)) / (len(A) + len(B) - 2))
    cohen_d = (np.mean(A) - np.mean(B)) / pooled
    assert c.hedges_g == pytest.approx(cohen_d * (1 - 3 / (4 * (len(A) + len(B)) - 9)), rel=1e-12)
    assert c.better == "transformer" and c.direction == "higher"


def test_hedges_g_matches_a_worked_example() -> None:
    # Two groups of 5 with means 6 and 4 and pooled sd sqrt(2.5): d = 1.2649, J = 1 - 3/31 = 0.90323.
    assert hedges_g([4, 5, 6, 7, 8], [2, 3, 4, 5, 6]) == pytest.approx(1.26491 * 0.903226, rel=1e-5)
    assert hedges_g([1.0], [2.0, 3.0]) is None and hedges_g([1.0, 1.0], [2.0, 2.0]) is None


def test_the_sentence_names_the_winner_the_gap_its_interval_p_and_the_counts() -> None:
    c = compare_groups("video/psnr", "unet", B, "transformer", A)  # the winner is the second group
    text = describe_comparison(c)
    gap = np.mean(A) - np.mean(B)
    match = re.fullmatch(r"transformer beats unet on video/psnr by ([\d.]+) dB, 95% CI \[([\d.]+), ([\d.]+)\], "
                         r"p=([\d.e-]+), n=4 vs 3", text)
    assert match, text
    _, low, high = _welch_by_hand(A, B, 0.95)
    assert [float(v) for v in match.groups()] == pytest.approx([gap, low, high, c.p], rel=2e-2)  # 3 and 2 digits


def test_lower_is_better_for_losses_and_the_interval_is_the_winners_advantage() -> None:
    c = compare_groups("val/loss", "big", [0.10, 0.11, 0.12], "small", [0.13, 0.15, 0.16])
    assert c.better == "big" and c.diff < 0
    text = describe_comparison(c)
    low, high = (float(v) for v in re.search(r"CI \[([-\d.]+), ([-\d.]+)\]", text).groups())
    assert 0 < low < high and text.startswith("big beats small on val/loss by 0.0367")


def test_an_unsignificant_difference_says_so_and_an_unknown_direction_names_no_winner() -> None:
    c = compare_groups("sys/gpu_util", "a", [1.0, 2.0, 3.0], "b", [1.5, 2.5, 3.6])
    assert c.better is None and c.p is not None and c.p > 0.05
    text = describe_comparison(c)
    assert text.startswith("b is higher than a on sys/gpu_util") and "(not significant)" in text
    assert "no better direction is known" in text
    ahead = describe_comparison(compare_groups("video/ssim", "a", [0.5, 0.7, 0.6], "b", [0.55, 0.6, 0.52]))
    assert ahead.startswith("a is ahead of b on video/ssim") and "(not significant)" in ahead


def test_groups_too_small_or_without_spread_get_no_test_and_a_reason() -> None:
    c = compare_groups("video/psnr", "a", [20.0], "b", [21.0, 22.0])
    assert (c.p, c.ci_low, c.hedges_g) == (None, None, None) and "a has n=1" in (c.note or "")
    assert "b is ahead of a" in describe_comparison(c)
    flat = compare_groups("video/psnr", "a", [20.0, 20.0], "b", [20.0, 20.0])
    assert flat.p is None and "no spread" in (flat.note or "")
    with pytest.raises(ValueError, match=r"confidence: expected a number in \(0, 1\), received 95"):
        compare_groups("video/psnr", "a", A, "b", B, confidence=95)


def test_video_metric_directions_have_one_source_that_every_metric_class_agrees_with() -> None:
    """The report kept its own torch-free copy of which way each video metric is better; now `metrics.names` holds
    the one table, and each torchmetrics class's `higher_is_better` attribute must say the same."""
    from opusclip_track import metrics
    from opusclip_track.metrics.collection import higher_is_better

    classes = {"psnr": metrics.PSNR, "ssim": metrics.SSIM, "lpips": metrics.LPIPS, "fid": metrics.FID,
               "is": metrics.InceptionScore, "fvd": metrics.FVD, "flicker": metrics.TemporalFlicker}
    assert set(classes) == set(METRIC_NAMES)
    for name, cls in classes.items():
        assert HIGHER_IS_BETTER[name] is cls.higher_is_better, name
    # The extra keys compute() returns beside their metric have no better direction.
    assert {k: v for k, v in HIGHER_IS_BETTER.items() if k not in classes} == {"temporal_diff": None, "is_std": None}
    for name, better in HIGHER_IS_BETTER.items():
        assert higher_is_better(f"video/{name}") is better
        assert report_stats.direction(f"video/{name}") == (None if better is None else "higher" if better else "lower")
    tables = [v for v in vars(report_stats).values() if isinstance(v, dict) and "psnr" in v]
    assert all(table is HIGHER_IS_BETTER for table in tables)  # the report reads the one table, no copy
    assert [direction(k) for k in ("video/psnr", "video/lpips", "video/temporal_diff", "train/loss", "val/mse",
                                   "sys/cpu_percent", "perf/samples_per_s")] == [
        "higher", "lower", None, "lower", "lower", None, None]
