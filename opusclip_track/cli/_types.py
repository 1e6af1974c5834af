"""Argument types the subcommands share: argparse turns their `ArgumentTypeError` into a usage error (exit 2)."""

from __future__ import annotations

import argparse

from opusclip_track.metrics.names import MetricName, check_metric_names


def metric_list(text: str) -> tuple[MetricName, ...]:
    """`"psnr,ssim"` -> `("psnr", "ssim")`, checked against the known metric names."""
    try:
        return check_metric_names([m.strip() for m in text.split(",") if m.strip()], name="--metrics")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def frame_size(text: str) -> tuple[int, int]:
    """`"128x96"` -> `(128, 96)`: height and width, both positive."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 128x128, received {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected positive HEIGHTxWIDTH, received {text!r}")
    return height, width


def positive_int(text: str) -> int:
    """`"8"` -> `8`; zero, negatives and non-integers are usage errors."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value
