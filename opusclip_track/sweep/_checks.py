"""The argument checks every module of the sweep package uses (a leaf: it imports nothing of the package)."""

from __future__ import annotations

import math
from typing import Any


def _error(path: str, expected: str, received: Any) -> ValueError:
    return ValueError(f"{path}: expected {expected}, received {received!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
