"""What importing the package and starting the command line load, checked in fresh interpreters.

`runs list` and `weights list` read SQLite or print a registry; they must not pay for torch and torchmetrics
(about 3 s). The tracker needs torch but not the metrics stack. Speed itself is measured in
`benchmarks/bench_imports.py`; these tests check `sys.modules`, which does not depend on the machine's load.
Also here: the import graph's arrows point down, and no module reaches into another's private names.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import opusclip_track

PACKAGE = Path(opusclip_track.__file__).parent
METRICS_STACK = ("torchmetrics", "torchvision", "torch_fidelity", "scipy", "lpips")


def loaded_after(code: str, cwd: Path) -> set[str]:
    """The top-level modules in `sys.modules` after running `code` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_command_line_loads_neither_torch_nor_numpy(tmp_path: Path) -> None:
    assert loaded_after("import opusclip_track.cli", tmp_path) & {"torch", "numpy", *METRICS_STACK} == set()


@pytest.mark.parametrize("argv", [["--help"], ["weights", "list"], ["weights", "--help"], ["runs", "list"],
                                  ["eval", "--help"], ["report", "--help"]])
def test_commands_that_read_or_print_do_not_import_torch(argv: list[str], tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()  # `runs list` reads ./runs: empty here
    code = f"from opusclip_track.cli import main\ncode = main({argv!r})\nassert code == 0, code"
    assert loaded_after(code, tmp_path) & {"torch", *METRICS_STACK} == set()


def test_the_tracker_does_not_import_the_metrics_stack(tmp_path: Path) -> None:
    loaded = loaded_after("from opusclip_track import AdvancedExperimentTracker", tmp_path)
    assert "torch" in loaded  # the tracker itself needs torch; only the metrics are deferred
    assert loaded & set(METRICS_STACK) == set()


def test_the_metrics_package_loads_a_metric_only_when_it_is_used(tmp_path: Path) -> None:
    assert loaded_after("import opusclip_track.metrics.weights", tmp_path) & {"torch", *METRICS_STACK} == set()
    assert "torchmetrics" in loaded_after("from opusclip_track.metrics import psnr", tmp_path)


# ---------------------------------------------------------------------------------------------------- graph


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module imported, names taken from it, at module level?) for every import statement of a file."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    found = []
    tree = ast.parse(path.read_text())
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.append((module, [a.name for a in node.names], id(node) in top_level))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top_level) for a in node.names]
    return found


def _module_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("leaf", ["_checks", "_text", "_files"])
def test_leaf_modules_import_nothing_of_the_package(leaf: str) -> None:
    imported = [m for m, _, _ in _imports(PACKAGE / f"{leaf}.py") if m.startswith("opusclip_track")]
    assert imported == []


@pytest.mark.parametrize("lower", ["media", "metrics", "data"])
def test_media_and_metrics_do_not_import_the_layers_above_them(lower: str) -> None:
    files = [PACKAGE / f"{lower}.py"] if (PACKAGE / f"{lower}.py").exists() else sorted((PACKAGE / lower).rglob("*.py"))
    upward = [(f.name, m) for f in files for m, _, _ in _imports(f)
              if m.startswith(("opusclip_track.evaluate", "opusclip_track.cli", "opusclip_track.tracker"))]
    assert upward == []


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = [f"{path.relative_to(PACKAGE.parent)}: from {module} import {name}"
                 for path in _module_files() for module, names, _ in _imports(path) for name in names
                 if name.startswith("_") and module != "__future__"]
    assert offenders == []


def test_metric_functions_win_over_their_modules_of_the_same_name(tmp_path: Path) -> None:
    # `collection` imports the modules `metrics.psnr`, `metrics.ssim`, ...: the package's names stay functions.
    code = ("import opusclip_track.metrics.collection, opusclip_track.metrics.fid\n"
            "from opusclip_track.metrics import fid, psnr, ssim\n"
            "import types\nassert not any(isinstance(f, types.ModuleType) for f in (fid, psnr, ssim)), (fid, psnr)")
    assert "opusclip_track" in loaded_after(code, tmp_path)
