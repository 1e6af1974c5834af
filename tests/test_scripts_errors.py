"""A mistake on the scripts' command line or in a config file is one clear line and a non-zero exit status, in
a real subprocess, before any run is created: never a traceback, never an empty run left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_scripts import load_script

REPO = Path(__file__).resolve().parents[1]
# A CUDA device this machine does not have: plain `cuda` on a CPU box, an index past the last GPU on a GPU box.
MISSING_CUDA = "cuda:99" if torch.cuda.is_available() else "cuda"


def fail(script: str, *args: str, cwd: Path, files: dict[str, str] | None = None, status: int = 1) -> str:
    """Run `script` with `args` in `cwd`; assert it exits with `status` and one message line; return that line."""
    for name, text in (files or {}).items():
        (cwd / name).write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == status, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    if status == 1:
        assert len(lines) == 1, proc.stderr[-3000:]
    assert not (cwd / "runs").exists() and not (cwd / "checkpoints").exists(), "a run was started for nothing"
    return lines[-1]


@pytest.mark.parametrize(("args", "files", "expected"), [
    pytest.param(["--device", MISSING_CUDA], {},
                 [f"device: expected an available device, received '{MISSING_CUDA}' (torch finds ", "'auto' uses CUDA"],
                 id="device-cuda-without-a-gpu"),
    pytest.param(["--config", "run.yaml"], {"run.yaml": "train: {lerning_rate: 0.01, log_every: 5}\n"},
                 ["section 'train' of 'run.yaml'", "unknown setting(s) ['lerning_rate']",
                  "did you mean 'learning_rate'?", "'lr'", "'max_epochs'"], id="misspelled-train-key"),
    pytest.param(["--config", "missing.yaml"], {},
                 ["--config: expected a readable YAML file, received 'missing.yaml' (No such file or directory)"],
                 id="missing-config-file"),
    pytest.param(["--config", "run.yaml"], {"run.yaml": "- lr: 0.01\n- batch_size: 4\n"},
                 ["--config: expected a mapping with sections 'tracking' and 'train' in 'run.yaml', received a list"],
                 id="config-not-a-mapping"),
])
def test_quick_start_says_what_is_wrong_in_one_line(tmp_path: Path, args: list[str], files: dict[str, str],
                                                    expected: list[str]) -> None:
    """Each of these used to print a traceback (the CUDA one after creating an empty run)."""
    message = fail("quick_start.py", *args, "--no-wandb", cwd=tmp_path, files=files)
    for part in expected:
        assert part in message, message


def test_quick_start_rejects_an_unknown_model_flag_listing_the_models(tmp_path: Path) -> None:
    message = fail("quick_start.py", "--model", "unet", cwd=tmp_path, status=2)
    assert "argument --model: invalid choice: 'unet' (choose from" in message and "transformer" in message


# The same checks without a subprocess each (one costs 5-15 s of imports on the shared box): the messages of
# the other config-file mistakes, and compare_models' device check.
@pytest.mark.parametrize(("text", "expected"), [
    ("train: [lr, 0.01]\n", "--config: expected section 'train' of 'run.yaml' to be a mapping of settings, "
                            "received a list"),
    ("tracking: {experiment_name: x}\nmodel: {width: 8}\n",
     "--config: expected sections 'tracking' and 'train' in 'run.yaml', received ['model']"),
    ("train: {lr: 0.01\n", "--config: expected valid YAML in 'run.yaml', received expected ',' or '}', but got "
                           "'<stream end>' at line 2, column 1"),
    ("train: {model: unet}\n",
     "quick_start: TrainConfig.model: expected one of ['transformer', 'video_generation'], received 'unet'"),
    ("tracking: {learnig_rate: 0.01}\n", "quick_start: TrackingConfig: unknown field(s) ['learnig_rate']"),
])
def test_quick_start_names_each_config_file_mistake(tmp_path: Path, text: str, expected: str) -> None:
    quick_start = load_script("quick_start.py")
    (tmp_path / "run.yaml").write_text(text)
    with pytest.raises(SystemExit) as raised:
        quick_start.build_configs(quick_start.parse_args(["--config", "run.yaml"]))
    assert str(raised.value.code).startswith(expected), raised.value.code


def test_compare_models_rejects_a_missing_cuda_device_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        load_script("compare_models.py").main(["--device", MISSING_CUDA, "--no-wandb"])
    assert str(raised.value.code).startswith(f"compare_models: --device: expected an available device, received "
                                             f"'{MISSING_CUDA}' (torch finds ")
    assert not (tmp_path / "runs").exists()
