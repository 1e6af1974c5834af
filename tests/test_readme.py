"""The README's examples, run and checked as written, so that they cannot drift from the code.

Every ```python block runs in a fresh interpreter, in a temporary folder, with the checkout on `PYTHONPATH`
(the example `models` live there), W&B offline without credentials, and no weights download; a block whose
first line is a `# torchrun ...` command runs under that command. A block that mentions `OPUSCLIP_WEIGHTS_DIR`
finds randomly initialised networks of the real architectures there, under the real file names (the
fixtures of `test_metrics_learned.py`). The blocks run `WORKERS` at a time (most of their time is importing
torch, torchmetrics or Lightning); each test waits for its own block and reports its output.

Every `opusclip-track ...` command line (code blocks and inline code) goes through the real parser, flags spelt
out (no abbreviations), as do the `scripts/sweep.py` lines; every `--flag` the README names is one a command of
ours takes (or another program's, listed); benchmark command lines name flags their script has; the repository
paths, the `opusclip_track.*` / `models.*` names and the links to the README's own sections exist.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from _readme import README, Block, command_lines, python_blocks
from test_metrics_learned import alexnet_dir, i3d_dir, inception_dir, weights_root  # noqa: F401  (fixtures)
from test_scripts import documented_commands, load_script

from opusclip_track.cli import PROG, build_parser
from opusclip_track.metrics import weights

REPO = README.parent
BLOCKS = python_blocks()
WEIGHTS_FIXTURES = ("alexnet_dir", "inception_dir", "i3d_dir")  # every file the learned metrics load
WORKERS = 3  # blocks at a time: one more than the 2 cores, since blocks also wait (W&B, flushes, torchrun)
BLOCK_TIMEOUT_S = 300
Runs = dict[int, Future[subprocess.CompletedProcess[str]]]  # README line of a block -> its run
RUN_PATHS = {"sweeps/lr/trial-000"}  # a run's path under --log-dir in the README, not a file of the repository
# Placeholders of the README's command lines that a parser with `choices` would refuse as written.
PLACEHOLDERS = {"BACKEND": "wandb"}


# -------------------------------------------------------------------------------------------- Python blocks


def _needs_weights(block: Block) -> bool:
    return weights.ENV_WEIGHTS_DIR in block.code


def _command(block: Block, script: Path) -> list[str]:
    """`python block.py`, or the block's own `# torchrun ... train.py` line with the block as `train.py`."""
    first = block.code.splitlines()[0]
    if not first.startswith("# torchrun "):
        return [sys.executable, str(script)]
    words = [str(script) if word == "train.py" else word for word in shlex.split(first[2:])[1:]]
    return [sys.executable, "-m", "torch.distributed.run", *words]


def _environment(folder: Path, weights_dir: Path | None) -> dict[str, str]:
    """This interpreter's environment, isolated as `conftest._isolated` isolates a test, for a block in `folder`."""
    env = {key: value for key, value in os.environ.items() if key not in ("WANDB_API_KEY", weights.ENV_WEIGHTS_DIR)}
    env.update({"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "NETRC": str(folder / "no-netrc"), "WANDB_CONFIG_DIR": str(folder / ".wandb-config"),
                "WANDB_CACHE_DIR": str(folder / ".wandb-cache"), "WANDB_SILENT": "true",
                "WANDB_DISABLE_GIT": "true", "TORCH_HOME": str(folder / ".torch"), weights.ENV_OFFLINE: "1",
                "OMP_NUM_THREADS": "1"})  # one thread per block: the blocks share the cores
    if weights_dir is not None:
        env[weights.ENV_WEIGHTS_DIR] = str(weights_dir)
    return env


def _run(block: Block, folder: Path, weights_dir: Path | None) -> subprocess.CompletedProcess[str]:
    script = folder / "block.py"
    script.write_text(block.code)
    return subprocess.run(_command(block, script), cwd=folder, env=_environment(folder, weights_dir),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)


@pytest.fixture(scope="module")
def block_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Start the selected blocks; each test waits for its own. The first ones start while the weights files are
    written, then the blocks that need them (the longest: learned metrics, torchrun) go first."""
    selected = [item.callspec.params["block"] for item in request.session.items
                if item.module is request.module and item.originalname == "test_every_python_block_of_the_readme_runs"]
    plain = [block for block in selected if not _needs_weights(block)]
    weighted = [block for block in selected if _needs_weights(block)]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        runs: Runs = {}

        def start(blocks: list[Block], weights_dir: Path | None) -> None:
            for block in blocks:
                runs[block.line] = pool.submit(_run, block, tmp_path_factory.mktemp(f"readme-{block.line}"),
                                               weights_dir)

        start(plain[:WORKERS], None)
        if weighted:  # one folder holds every file
            start(weighted, {request.getfixturevalue(name) for name in WEIGHTS_FIXTURES}.pop())
        start(plain[WORKERS:], None)
        yield runs
        for future in runs.values():
            future.cancel()


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_every_python_block_of_the_readme_runs(block: Block, block_runs: Runs) -> None:
    done = block_runs[block.line].result()
    assert done.returncode == 0, (f"README.md line {block.line} ({block.heading}) exits {done.returncode}: "
                                  f"{shlex.join(map(str, done.args))}\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}")


# ----------------------------------------------------------------------------------- command lines and names


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command (`("runs", "show")`, `("sync",)`, ...) of the parser."""
    children = _subcommands(parser)
    if not children:
        return [prefix]
    return [path for name, child in children.items() for path in _command_paths(child, (*prefix, name))]


def _names_only_a_command(parser: argparse.ArgumentParser, words: list[str]) -> bool:
    """True for a mention such as `opusclip-track runs show` (a command's name without its arguments)."""
    for word in words:
        children = _subcommands(parser)
        if word not in children:
            return False
        parser = children[word]
    return True


def _strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` without abbreviations: `--key` must not pass for `--keys` (a renamed flag would go unnoticed)."""
    parser.allow_abbrev = False
    for child in _subcommands(parser).values():
        _strict(child)
    return parser


def _parse(words: list[str]) -> argparse.Namespace:
    """Parse as `opusclip-track` does (flags spelt out); a usage error fails the test with argparse's message."""
    parser = _strict(build_parser())
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stderr):
        try:
            if _names_only_a_command(parser, words):
                parser.parse_args([*words, "--help"])
            return parser.parse_args(words)
        except SystemExit as exit_:
            if exit_.code == 0:  # --help of a command that exists
                return argparse.Namespace(func=True)
            pytest.fail(f"`{PROG} {shlex.join(words)}` is refused: {stderr.getvalue().strip().splitlines()[-1]}")


COMMANDS = command_lines(PROG)


@pytest.mark.parametrize(("line", "words"), COMMANDS, ids=[f"line{n}-{'-'.join(words[:2])}" for n, words in COMMANDS])
def test_every_opusclip_track_command_line_of_the_readme_parses(line: int, words: list[str]) -> None:
    parsed = _parse([PLACEHOLDERS.get(word, word) for word in words])
    assert getattr(parsed, "func", None) is not None, f"README.md line {line}: `{PROG} {shlex.join(words)}` " \
                                                     "is not a complete command"


def test_every_opusclip_track_command_is_documented() -> None:
    documented = {tuple(w for w in words if not w.startswith("-"))[:2] for _, words in COMMANDS}
    documented |= {path[:1] for path in documented}
    missing = [" ".join(path) for path in _command_paths(build_parser()) if path not in documented]
    assert not missing, f"commands the README never shows: {missing}"


def test_a_misspelled_flag_in_a_readme_command_fails_the_check() -> None:
    text = "Run `opusclip-track runs compare A B --key 'video/*'`.\n\n```bash\n$ opusclip-track runs list\n```\n"
    (_, listed), (_, compared) = command_lines(PROG, text)
    assert listed == ["runs", "list"] and _parse(listed).func
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --key"):
        _parse(compared)


def test_every_documented_command_line_of_the_sweep_script_is_one_it_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = documented_commands("sweep.py")
    assert len(commands) >= 4
    monkeypatch.chdir(REPO)  # the lines name sweeps/*.yaml from the checkout, which parse_args checks
    for args in commands:
        load_script("sweep.py").parse_args(args)


def test_every_benchmark_command_line_names_a_script_and_flags_it_has() -> None:
    text = README.read_text()
    found = re.findall(r"benchmarks/(bench_\w+\.py)((?:\s+\[?--[\w-]+(?:\s+[^\s\[\]`;,)-][^\s\[\]`;,)]*)?\]?)*)", text)
    assert len(found) >= 9
    for name, rest in found:
        source = (REPO / "benchmarks" / name).read_text()
        for flag in re.findall(r"--[\w-]+", rest):
            assert f'"{flag}"' in source, f"README: benchmarks/{name} {flag}, which it does not take"
    for name in re.findall(r"`(bench_\w+\.py)`", text):  # the benchmark table's rows
        assert (REPO / "benchmarks" / name).is_file(), name


def test_every_repository_path_the_readme_names_exists() -> None:
    text = README.read_text()
    paths = set(re.findall(r"(?<![\w/.<-])((?:opusclip_track|models|scripts|tests|benchmarks|sweeps|docs|\.ci)"
                           r"/[\w./{},*-]*)(?![\w./{},*<-])", text)) - RUN_PATHS
    assert len(paths) > 40
    missing = []
    for path in sorted(paths):
        braces = re.fullmatch(r"(.*)\{(.*)\}(.*)", path)
        expanded = [braces[1] + part + braces[3] for part in braces[2].split(",")] if braces else [path]
        missing += [p for p in expanded if not list(REPO.glob(p))]
    assert not missing, f"paths in the README that are not in the repository: {missing}"


@functools.cache
def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        try:
            for attribute in parts[i:]:
                target = getattr(target, attribute)
        except AttributeError:
            return False
        return True
    return False


def test_every_module_function_and_constant_the_readme_names_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    names = set(re.findall(r"(?<![\w/.])((?:opusclip_track|models)(?:\.\w+)+)", README.read_text()))
    assert len(names) > 20
    missing = sorted(name for name in names if not _resolves(name))
    assert not missing, f"names in the README that do not exist: {missing}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_inside_the_readme_points_to_a_heading() -> None:
    text = README.read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # a `#` line in a code block is no heading
    anchors = {_anchor(heading) for heading in re.findall(r"^#{1,6} (.*)$", prose, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "the README links to its own sections"
    assert not sorted(set(links) - anchors), f"links to no heading: {sorted(set(links) - anchors)}"


# Flags of other programs the README shows (TensorBoard, torchrun, accelerate, MLflow) and the secret-looking
# arguments it says are redacted from a recorded command line: not ours to check.
OTHER_PROGRAMS_FLAGS = {"--logdir", "--load_fast", "--standalone", "--nproc_per_node", "--multi_gpu", "--num_processes",
                        "--cpu", "--backend-store-uri", "--api-key", "--password", "--token", "--wandb_token"}


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    found = {option for action in parser._actions for option in action.option_strings}
    for child in _subcommands(parser).values():
        found |= _option_strings(child)
    return found


def _script_flags(name: str) -> set[str]:
    """The flags `scripts/<name>` takes, read from its own `--help`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        load_script(name).parse_args(["--help"])
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", out.getvalue()))


def test_every_flag_the_readme_names_is_one_a_command_takes() -> None:
    ours = _option_strings(build_parser())
    ours |= {flag for name in ("quick_start.py", "compare_models.py", "sweep.py") for flag in _script_flags(name)}
    ours |= {flag for path in (REPO / "benchmarks").glob("bench_*.py")
             for flag in re.findall(r"\"(--[a-z][\w-]*)\"", path.read_text())}
    named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", README.read_text()))
    unknown = sorted(named - ours - OTHER_PROGRAMS_FLAGS)
    assert not unknown, f"flags in the README that no command takes: {unknown}"
