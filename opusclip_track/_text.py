"""Plain-text output shared by the command line and the summaries: one aligned table, one Markdown table, one
number format, and values made strict JSON.

A leaf module (standard library only), so the command line can print tables without importing torch.

Example:
    >>> print(format_table(["metric", "value"], [["video/psnr", "28.81"], ["video/ssim", "0.54"]], align="<>"))
    metric      value
    ----------  -----
    video/psnr  28.81
    video/ssim   0.54
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["format_number", "format_table", "markdown_table", "plain_json"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str | None = None) -> str:
    """An aligned text table: the header, a dashed rule, then one line per row; columns two spaces apart.

    Args:
        header: the column titles.
        rows: the cells, already formatted as strings, one sequence per row, as many cells as `header`.
        align: one character per column, `"<"` (left) or `">"` (right); None aligns every column left.

    Returns:
        The table without a trailing newline; trailing spaces are stripped from every line.

    Raises:
        ValueError: when a row or `align` does not have one entry per column, or `align` holds other characters.
    """
    columns = len(header)
    align = "<" * columns if align is None else align
    if len(align) != columns or set(align) - {"<", ">"}:
        raise ValueError(f"align: expected {columns} characters out of '<' and '>', received {align!r}")
    for index, row in enumerate(rows):
        if len(row) != columns:
            raise ValueError(f"rows[{index}]: expected {columns} cells like the header {list(header)}, "
                             f"received {len(row)}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(columns)]
    lines = [_line(header, widths, align), "  ".join("-" * w for w in widths)]
    lines += [_line(row, widths, align) for row in rows]
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: list[int], align: str) -> str:
    padded = (str(c).rjust(w) if a == ">" else str(c).ljust(w) for c, w, a in zip(cells, widths, align, strict=True))
    return "  ".join(padded).rstrip()


# Characters Markdown reads as emphasis, code, links or table syntax inside a cell; a backslash shows them as they
# are (TensorBoard's renderer, `tensorboard.plugin_util.markdown_to_safe_html`, honours these escapes; it shows
# HTML such as `<b>` literally by itself, and would print a backslash before `<` or `~`).
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]|#]")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown (GitHub) table, as TensorBoard's Text tab renders it: cells through `format_number` (floats to 6
    significant digits, None as "None"; pass strings to show values exactly), Markdown's inline punctuation
    escaped (a glob `*loss*` stays `*loss*`, not an italic "loss"), newlines as spaces.

    Example:
        >>> print(markdown_table(["model", "psnr"], [["conv", 14.912345678], ["vit", None]]))
        | model | psnr |
        |---|---|
        | conv | 14.9123 |
        | vit | None |
    """
    def cell(value: Any) -> str:
        return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", format_number(value, missing="None")).replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def format_number(value: Any, *, missing: str = "-") -> str:
    """A table cell for a value: floats to 6 significant digits (`0.0369512` -> `"0.0369512"`, `1e-07`), None as
    `missing`, anything else as `str(value)` (ints stay exact)."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plain_json(value: Any) -> Any:
    """`value` as strict JSON data (`json.dumps(..., allow_nan=False)` accepts it): NaN and +-inf become the strings
    `"nan"`, `"inf"`, `"-inf"`, tuples become lists, keys become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    return value
