"""`opusclip-track`: the command line.

Each subcommand is registered by one small function that adds its parser and sets `func`, a handler taking
the parsed arguments and returning the exit code: `eval` in `cli/eval.py`, `weights` in `cli/weights.py`,
`runs` in `cli/runs.py`, `sync` in `cli/sync.py` (the replay itself is `opusclip_track.sync`), `report` in
`report/cli.py`. Building the parser imports no torch: a command loads what it needs when it runs, so `--help`,
`runs list` and `weights list` start in a fraction of a second.

    opusclip-track eval --generated samples/ --reference real/ --metrics psnr,ssim,flicker --json scores.json
    opusclip-track weights list | download --all | verify
    opusclip-track runs list | show RUN | compare RUN RUN ... --keys 'video/*' --json
    opusclip-track sync RUN --to wandb
    opusclip-track report 'runs/compare-*' --out report.html --json stats.json
    python -m opusclip_track.cli eval ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opusclip_track.cli.eval import add_eval_parser
from opusclip_track.cli.weights import add_weights_parser

__all__ = ["PROG", "build_parser", "main"]

PROG = "opusclip-track"
# Errors a user can fix (bad paths, unpaired or unreadable files, missing weights): a message, not a traceback.
_USER_ERRORS = (ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    """The `opusclip-track` parser with every available subcommand."""
    # Imported here rather than at the top so that `import opusclip_track.cli` stays free of numpy, which the
    # run store and the record types import (~0.1 s); building the parser is the first moment it is needed.
    from opusclip_track.cli.runs import add_runs_parser
    from opusclip_track.cli.sync import add_sync_parser
    from opusclip_track.report.cli import add_report_parser

    parser = argparse.ArgumentParser(prog=PROG, description="Experiment tracking and evaluation for "
                                     "video-generation research.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_eval_parser(subparsers)
    add_weights_parser(subparsers)
    add_runs_parser(subparsers)
    add_sync_parser(subparsers)
    add_report_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 a reported error, 2 a usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except _USER_ERRORS as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1
