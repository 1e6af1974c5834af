"""Argument checks every module shares: value ranges, numbers, ints and the one error message format.

A leaf module: it imports nothing of the package (and nothing beyond the standard library), so any module,
however low, can use it without an import running back up the layers (torchmetrics keeps its checks in a
leaf `utilities/checks.py` for the same reason). Every error follows the project's form, `"{name}: expected
{expected}, received {received!r}"`, naming the argument, what was expected and what was received.

Example:
    >>> check_int("num_frames", 16, minimum=1)
    16
    >>> check_value_range((-1, 1))
    (-1.0, 1.0)
"""

from __future__ import annotations

import math

__all__ = [
    "RANGE_SLOP", "ValueRange", "argument_error", "check_bounds", "check_int", "check_value_range", "is_int",
    "is_number",
]

ValueRange = tuple[float, float]

# Float inputs may overshoot their range by this much (in units of the range's span): decoders, resampling
# and float16 rounding produce values like 1.0002, which are not a caller's mistake.
RANGE_SLOP = 1e-3


def argument_error(name: str, expected: str, received: object) -> ValueError:
    """The project's `ValueError` for a bad argument: `"{name}: expected {expected}, received {received!r}"`.

    Example:
        >>> raise argument_error("metric.goal", "'minimize' or 'maximize'", "max")
        Traceback (most recent call last):
        ValueError: metric.goal: expected 'minimize' or 'maximize', received 'max'
    """
    return ValueError(f"{name}: expected {expected}, received {received!r}")


def is_int(value: object) -> bool:
    """Whether `value` is an `int` (a `bool` is not, although Python makes it a subclass of int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object, *, finite: bool = False) -> bool:
    """Whether `value` is an `int` or `float` (not a `bool`); with `finite`, also not NaN or infinite."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return not finite or math.isfinite(value)


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return `value` when it is an int (not a bool) of at least `minimum`.

    Raises:
        ValueError: `"{name}: expected an int >= {minimum}, received {value!r}"` (or `"an int"` without a
            minimum).
    """
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise argument_error(name, "an int" if minimum is None else f"an int >= {minimum}", value)
    return value


def check_value_range(value_range: ValueRange, *, name: str = "value_range") -> ValueRange:
    """Validate a `(low, high)` pair and return it as floats.

    Raises:
        ValueError: when it is not two finite numbers with low < high.
    """
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (low, high) pair of numbers such as (0.0, 1.0) or (-1.0, 1.0), "
                         f"received {value_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name}: expected finite low < high, received {value_range!r}")
    return low, high


def check_bounds(lo: float, hi: float, *, name: str, low: float, high: float) -> None:
    """Raise when the observed minimum/maximum leave `[low, high]` by more than `RANGE_SLOP`, or are NaN.

    The one judgement of float ranges, shared by the metrics (torch) and the media encoders (numpy): the
    caller reduces its data to `(lo, hi)` with its own library and hands the two floats here.
    """
    slop = RANGE_SLOP * (high - low)
    if lo != lo or hi != hi:  # NaN propagates through min/max
        raise ValueError(f"{name}: expected finite values in [{low:g}, {high:g}], received NaN")
    if lo < low - slop or hi > high + slop:
        raise ValueError(f"{name}: expected values in value_range [{low:g}, {high:g}], received values in "
                         f"[{lo:.4g}, {hi:.4g}] (pass value_range=(-1.0, 1.0) for tanh outputs, or uint8 "
                         f"for 0-255 frames)")
