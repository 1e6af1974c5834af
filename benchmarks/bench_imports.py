"""Start-up cost: importing the tracker and starting the command line, each in a fresh interpreter.

Every figure is the median wall time of `--reps` fresh `python` subprocesses (so nothing is cached in
`sys.modules`), measured side by side in this one run:

* python: the bare interpreter (`python -c pass`), the floor under every other row;
* import torch: the peer, what any script that trains a model pays anyway;
* tracker import: `from opusclip_track import AdvancedExperimentTracker`;
* cli --help, weights list, runs list: the `opusclip-track` command line (`python -m opusclip_track.cli ...`),
  which should cost about the interpreter, not torch.

Each row also says which heavy libraries the command left in `sys.modules`. Run:
`python benchmarks/bench_imports.py [--reps 5] [--json out.json]`. Machines are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HEAVY = ("torch", "numpy", "torchmetrics", "torchvision", "torch_fidelity", "scipy", "wandb", "av")
# Appended to every measured snippet: report which heavy libraries it imported (printed, not timed).
_REPORT = f"import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"


@dataclass
class Row:
    name: str
    median_ms: float
    heavy_loaded: str


def _snippets() -> dict[str, str]:
    cli = "from opusclip_track.cli import main; main({argv!r})"
    return {
        "python": "pass",
        "import torch": "import torch",
        "tracker import": "from opusclip_track import AdvancedExperimentTracker",
        "cli --help": cli.format(argv=["--help"]),
        "weights list": cli.format(argv=["weights", "list"]),
        "runs list": cli.format(argv=["runs", "list"]),  # an empty ./runs in a temporary working directory
    }


def _run_once(code: str, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", f"{code}\n{_REPORT}"], capture_output=True, text=True,
                          check=False, cwd=cwd)
    elapsed = (time.perf_counter() - start) * 1e3
    if done.returncode != 0:
        raise RuntimeError(f"{code!r} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def measure(reps: int) -> list[Row]:
    """Median wall time of `reps` fresh interpreters per snippet, rounds interleaved so load drifts evenly."""
    snippets = _snippets()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "runs").mkdir()
        times: dict[str, list[float]] = {name: [] for name in snippets}
        loaded: dict[str, str] = {}
        for _ in range(reps):
            for name, code in snippets.items():
                elapsed, heavy = _run_once(code, Path(tmp))
                times[name].append(elapsed)
                loaded[name] = heavy
    return [Row(name, statistics.median(times[name]), loaded[name] or "-") for name in snippets]


def format_rows(rows: list[Row]) -> str:
    base = {r.name: r.median_ms for r in rows}
    torch_ms = base["import torch"] - base["python"]
    lines = [f"{'':<16}{'median ms':>10}{'over python':>13}{'/ torch import':>16}  heavy modules loaded"]
    for r in rows:
        extra = r.median_ms - base["python"]
        ratio = f"{extra / torch_ms:.2f}x" if r.name != "python" and torch_ms > 0 else "-"
        lines.append(f"{r.name:<16}{r.median_ms:>10.0f}{extra:>13.0f}{ratio:>16}  {r.heavy_loaded}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="fresh interpreters per row (median kept)")
    parser.add_argument("--json", metavar="PATH", help="write the figures here")
    args = parser.parse_args()
    rows = measure(args.reps)
    print(f"median of {args.reps} fresh interpreters each; '/ torch import' = time over bare python, as a "
          "fraction of `import torch`'s")
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
