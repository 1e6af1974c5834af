"""`opusclip_track._checks`: the leaf module of argument checks that every layer shares."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from opusclip_track._checks import (
    RANGE_SLOP,
    argument_error,
    check_bounds,
    check_int,
    check_value_range,
    is_int,
    is_number,
)


def test_is_a_leaf_that_imports_nothing_of_the_package_nor_torch() -> None:
    # The module loaded from its file on its own, outside the package (whose __init__ imports config, which uses
    # it): what it pulls in is its own doing.
    code = ("import importlib.util, sys, opusclip_track._checks as m; path = m.__file__; "
            "[sys.modules.pop(k) for k in list(sys.modules) if k.startswith('opusclip_track') or k in ('torch', "
            "'numpy')]; spec = importlib.util.spec_from_file_location('leaf_checks', path); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "print(sorted(k for k in sys.modules if k.startswith('opusclip_track') or k in ('torch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_argument_error_has_the_project_form() -> None:
    err = argument_error("metric.goal", "'minimize' or 'maximize'", "max")
    assert isinstance(err, ValueError)
    assert str(err) == "metric.goal: expected 'minimize' or 'maximize', received 'max'"


@pytest.mark.parametrize("value, expected", [(3, True), (-1, True), (True, False), (3.0, False), ("3", False),
                                             (None, False)])
def test_is_int_excludes_bool_and_float(value: object, expected: bool) -> None:
    assert is_int(value) is expected


@pytest.mark.parametrize("value, plain, finite", [
    (3, True, True), (2.5, True, True), (math.inf, True, False), (math.nan, True, False), (False, False, False),
    ("1", False, False), (None, False, False),
])
def test_is_number_with_and_without_finite(value: object, plain: bool, finite: bool) -> None:
    assert is_number(value) is plain
    assert is_number(value, finite=True) is finite


def test_check_int_returns_the_value_or_names_the_argument() -> None:
    assert check_int("epoch", 0, minimum=0) == 0
    assert check_int("count", 7) == 7
    with pytest.raises(ValueError, match=r"^num_clips: expected an int >= 1, received 0$"):
        check_int("num_clips", 0, minimum=1)
    with pytest.raises(ValueError, match=r"^step: expected an int >= 0, received True$"):
        check_int("step", True, minimum=0)
    with pytest.raises(ValueError, match=r"^count: expected an int, received 2\.0$"):
        check_int("count", 2.0)


def test_value_range_and_bounds() -> None:
    assert check_value_range((-1, 1)) == (-1.0, 1.0)
    with pytest.raises(ValueError, match="value_range: expected finite low < high"):
        check_value_range((1.0, 0.0))
    with pytest.raises(ValueError, match=r"vr: expected a \(low, high\) pair"):
        check_value_range("ab", name="vr")  # type: ignore[arg-type]
    check_bounds(-RANGE_SLOP / 2, 1 + RANGE_SLOP / 2, name="video", low=0.0, high=1.0)  # within the slop
    with pytest.raises(ValueError, match=r"video: expected values in value_range \[0, 1\], received values in "
                                         r"\[-0\.98, 0\.99\]"):
        check_bounds(-0.98, 0.99, name="video", low=0.0, high=1.0)
    with pytest.raises(ValueError, match="received NaN"):
        check_bounds(math.nan, 1.0, name="video", low=0.0, high=1.0)
