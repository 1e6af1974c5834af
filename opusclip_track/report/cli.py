"""`opusclip-track report`: one offline HTML page comparing runs, with statistics over seeds.

    opusclip-track report 'cmp-*' --out report.html --group-by train.model --json stats.json
    opusclip-track report runs/a runs/b --keys val/loss 'video/*' --clip-step 1000

Building the parser imports nothing heavy (argparse and pathlib); the report's code, numpy and scipy load
when the command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_report_parser", "run_report"]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), received {text!r}")
    return value


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer step, received {text!r}") from None
    return value


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `report` command to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "report", help="write one offline HTML page comparing runs: curves, per-frame quality, clips, statistics",
        description="Write one HTML file (no network needed to open it) comparing runs: a run table with a config "
                    "diff, learning curves, per-frame quality, clips playing in lock-step, system load, alerts, "
                    "and statistics over seeds per group (mean, 95%% t interval, Welch's t-test, Hedges' g).")
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_GLOB",
                        help="run directories, run names under --log-dir, or globs of either (quote them)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), metavar="PATH",
                        help="the HTML file (default: report.html)")
    parser.add_argument("--keys", nargs="+", metavar="KEY",
                        help="scalar keys or globs for curves and statistics, space- or comma-separated "
                             "(default: train/loss val/loss 'video/*')")
    parser.add_argument("--group-by", metavar="KEY",
                        help="group, a config key such as train.model, or hparams.NAME (default: the first of "
                             "group, model, train.model, hparams.model that splits the runs)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every number here")
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="where run names are looked up")
    parser.add_argument("--clip-step", type=_step, metavar="STEP",
                        help="the step whose clips the gallery shows (default: the last step all runs have)")
    parser.add_argument("--media", choices=("auto", "embed", "folder"), default="auto",
                        help="clips embedded in the page, copied to <out>_files/, or auto: embedded up to 8 MiB")
    parser.add_argument("--smoothing", type=_fraction, default=0.6, metavar="W",
                        help="EMA weight of the smoothed curves in [0, 1) (default: 0.6, as TensorBoard)")
    parser.add_argument("--title", help="the page's heading")
    parser.set_defaults(func=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Handler of `report`: write the page (and the JSON), print where they are."""
    from opusclip_track.config import redact_argv
    from opusclip_track.report.build import build_report

    keys = [k.strip() for item in args.keys or [] for k in item.split(",") if k.strip()] or None
    result = build_report(args.runs, args.out, keys=keys, group_by=args.group_by, json_path=args.json,
                          log_dir=args.log_dir, clip_step=args.clip_step, media=args.media,
                          smoothing=args.smoothing, title=args.title,
                          command=shlex.join(["opusclip-track", "report", *redact_argv(sys.argv[2:])])
                          if sys.argv[1:2] == ["report"] else None)  # shown in the page, as typed
    media = "clips embedded" if result.media == "embed" else f"clips in {args.out.stem}_files/"
    print(f"wrote {result.html} ({result.runs} runs, {result.bytes / 1024:.0f} KB, {media})")
    if result.json is not None:
        print(f"wrote {result.json}")
    return 0
