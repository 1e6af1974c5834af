"""`opusclip-track sync RUN --to BACKEND`: replay a run's local store into a backend of the registry.

    opusclip-track sync quick-start-eager --to wandb        # a --no-wandb run, or one W&B missed
    opusclip-track sync sweeps/lr/trial-003 --to mlflow
    opusclip-track sync my-run --to tensorboard              # a run that had TensorBoard off

The replay itself is `opusclip_track.sync.sync` (importable); this module only parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from opusclip_track.backends import REGISTRY
from opusclip_track.store import find_run

__all__ = ["add_sync_parser"]


def add_sync_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `sync` command to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser("sync", help="replay a run's local store into a backend",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory, name, path under --log-dir, or a unique prefix")
    parser.add_argument("--to", choices=sorted(REGISTRY), required=True,
                        help="a backend of opusclip_track.backends.REGISTRY")
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="where the runs are (default: runs)")
    parser.set_defaults(func=run_sync)
    return parser


def run_sync(args: argparse.Namespace) -> int:
    """Handler of `sync`: replay, then say what was sent; returns once the backend has closed."""
    # Imported when the command runs: the backends load their libraries (wandb, mlflow) only then.
    from opusclip_track.sync import sync

    result = sync(find_run(args.log_dir, args.run), args.to)
    print(f"replayed {result.describe()} of {result.run_dir} into {result.backend} (closed {result.status})")
    return 0
