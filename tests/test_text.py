"""`opusclip_track._text.format_table`: the one aligned text table of the command line and the summaries."""

from __future__ import annotations

import pytest

from opusclip_track._text import format_table, markdown_table
from opusclip_track.compare import summarize


def test_columns_are_aligned_with_a_rule_under_the_header() -> None:
    table = format_table(["metric", "value", "better"], [["video/psnr", "28.8112", "higher"],
                                                         ["video/temporal_diff", "0.0099", "0 best"],
                                                         ["video/flicker", "0.0408", "lower"]], align="<><")
    assert table.splitlines() == [
        "metric                 value  better",
        "-------------------  -------  ------",
        "video/psnr           28.8112  higher",
        "video/temporal_diff   0.0099  0 best",
        "video/flicker         0.0408  lower",  # no trailing spaces
    ]


def test_left_aligned_by_default_and_errors_name_the_argument() -> None:
    assert format_table(["a", "bb"], [["xyz", "1"]]).splitlines() == ["a    bb", "---  --", "xyz  1"]
    with pytest.raises(ValueError, match=r"rows\[0\]: expected 2 cells"):
        format_table(["a", "b"], [["only one"]])
    with pytest.raises(ValueError, match=r"align: expected 2 characters out of '<' and '>', received '<\^'"):
        format_table(["a", "b"], [], align="<^")


def test_model_comparison_prints_through_it() -> None:
    comparison = summarize({"Small": [{"val/loss": 0.02}, {"val/loss": 0.03}], "LargerModel": [{"val/loss": 0.5}]},
                           metrics=["val/loss"])
    assert comparison.format_table().splitlines() == [
        "model        val/loss",
        "-----------  --------------------",
        "Small        0.025 ± 0.0071 (n=2)",
        "LargerModel  0.5 ± 0 (n=1)",
    ]


def test_a_markdown_table_shows_every_cell_exactly_as_logged_in_tensorboards_text_tab() -> None:
    # TensorBoard renders text as Markdown: a glob '*loss*' was shown as an italic "loss", '[a](x)' as a link.
    from tensorboard.plugin_util import markdown_to_safe_html

    values = ["['*loss_scale*']", "__init__", "[a](http://x)", "`code`", "a|b", "c\\d", "#tag", "<b>x</b>", "~s~"]
    html = markdown_to_safe_html(markdown_table(["value"], [[v] for v in values]))
    cells = [c.removeprefix("<td>").removesuffix("</td>") for c in html.split("\n") if c.startswith("<td>")]
    unescape = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}
    for old, new in unescape.items():
        cells = [c.replace(old, new) for c in cells]
    assert cells == values
