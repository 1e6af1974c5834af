"""The names of the video metrics, the weights files they load, which way each is better, and the layout of the
per-frame quality table: plain data, no torch.

What the command line needs to check `--metrics`, to say which weights files a metric requires and to state a
metric's better direction in a report, without loading torch or torchmetrics (about 3 s) to do it.
`collection.py` builds the metrics behind these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, get_args

MetricName = Literal["psnr", "ssim", "lpips", "fid", "is", "fvd", "flicker"]
METRIC_NAMES: tuple[str, ...] = get_args(MetricName)
DEFAULT_METRICS: tuple[MetricName, ...] = ("psnr", "ssim", "lpips", "fid", "is", "fvd", "flicker")
# The registry key (`weights.REGISTRY`) of the file each learned metric loads with its default settings
# (LPIPS: net="alex"; its net="vgg" loads "vgg16"). PSNR, SSIM and flicker load none.
WEIGHTS_KEY: dict[str, str] = {"lpips": "alexnet", "fid": "inception", "is": "inception", "fvd": "i3d"}
# Whether a larger value of each key `VideoMetrics.compute` returns (without its `video/` prefix) is better: the
# one table `collection.higher_is_better` and the report read. The metric classes carry the same answer as
# torchmetrics' `higher_is_better` attribute (tests/test_report_stats.py checks that every class agrees), but
# reading it there loads torch (~3 s), which the report's command line must not. None: neither way is better
# (`temporal_diff` is best at 0, `is_std` is a spread).
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "psnr": True, "ssim": True, "lpips": False, "fid": False, "is": True, "fvd": False, "flicker": False,
    "temporal_diff": None, "is_std": None,
}


# The table of quality against generated-frame index is logged as `<prefix>/per_frame` (`video/per_frame`):
# column `t`, then one column per per-frame metric. The report's per-frame section reads it.
PER_FRAME_TABLE = "per_frame"


def per_frame_table(curves: Mapping[str, Sequence[float]]) -> tuple[list[str], list[list[float]]]:
    """The `<prefix>/per_frame` table of per-timestep curves: columns `t` then each metric's name (its `video/`
    prefix dropped), one row per generated frame index.

    Args:
        curves: `VideoMetrics.compute_curves()` as lists (`{"video/psnr": [...], ...}`), all of one length.

    Example:
        >>> per_frame_table({"video/psnr": [30.0, 24.5], "video/ssim": [0.9, 0.7]})
        (['t', 'psnr', 'ssim'], [[0, 30.0, 0.9], [1, 24.5, 0.7]])
    """
    lengths = {name: len(curve) for name, curve in curves.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"curves: expected curves of one length (one value per frame), received lengths {lengths}")
    columns = ["t", *(name.removeprefix("video/") for name in curves)]
    rows = [[t, *(float(curve[t]) for curve in curves.values())] for t in range(max(lengths.values(), default=0))]
    return columns, rows


def check_metric_names(metrics: Iterable[str], *, name: str = "metrics") -> tuple[MetricName, ...]:
    """Validate metric names (duplicates dropped, order kept).

    Raises:
        ValueError: for an empty selection or an unknown name; the message lists the known ones.
    """
    if isinstance(metrics, str):
        raise ValueError(f"{name}: expected a sequence of metric names such as ('psnr', 'ssim'), "
                         f"received the string {metrics!r}")
    chosen = tuple(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in METRIC_NAMES]
    if unknown or not chosen:
        raise ValueError(f"{name}: expected one or more of {list(METRIC_NAMES)}, received {list(metrics)!r}")
    return chosen  # type: ignore[return-value]


def weights_keys(metrics: Iterable[MetricName]) -> tuple[str, ...]:
    """The registry keys of the weights files `metrics` load by default, in order, without duplicates.

    Example:
        >>> weights_keys(("psnr", "fid", "is", "fvd"))
        ('inception', 'i3d')
    """
    return tuple(dict.fromkeys(WEIGHTS_KEY[m] for m in metrics if m in WEIGHTS_KEY))
