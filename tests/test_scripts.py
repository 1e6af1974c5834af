"""The scripts end to end, in subprocesses, read back with TensorBoard's reader and the run store."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from tensorboard.plugins.hparams import plugin_data_pb2

from _readers import tensorboard_accumulator
from opusclip_track import RunStore, list_runs
from opusclip_track.checkpoint import CheckpointManager

REPO = Path(__file__).resolve().parents[1]
TINY = ["--max-steps", "4", "--eval-every", "2", "--image-size", "32", "--batch-size", "2"]


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a script as a user does from any folder (it finds the example models of its checkout itself)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_script_{name.removesuffix('.py')}", REPO / "scripts" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_quick_start_uses_the_recipe_fields_of_its_tracking_section(tmp_path: Path) -> None:
    """`tracking: {learning_rate: 0.5}` used to be recorded in the run config and ignored by the training."""
    quick_start = load_script("quick_start.py")
    path = tmp_path / "run.yaml"
    path.write_text("tracking: {learning_rate: 0.5, batch_size: 16, max_epochs: 2}\ntrain: {log_every: 5}\n")
    tracking, training = quick_start.build_configs(quick_start.parse_args(["--config", str(path)]))
    assert (training.lr, training.batch_size, training.epochs, training.log_every) == (0.5, 16, 2, 5)
    assert tracking.learning_rate == 0.5
    path.write_text("tracking: {learning_rate: 0.5}\ntrain: {lr: 0.1}\n")
    with pytest.raises(SystemExit, match=r"TrainConfig.lr=0.1 conflicts with TrackingConfig.learning_rate=0.5"):
        quick_start.build_configs(quick_start.parse_args(["--config", str(path)]))
    path.write_text("tracking: {flush_interval_s: .inf}\n")
    with pytest.raises(SystemExit, match=r"TrackingConfig.flush_interval_s: expected .* received inf"):
        quick_start.build_configs(quick_start.parse_args(["--config", str(path)]))
    _, defaults = quick_start.build_configs(quick_start.parse_args([]))
    assert (defaults.lr, defaults.batch_size, defaults.epochs) == (2e-3, 8, 4)  # the flags' defaults


def documented_commands(script: str) -> list[list[str]]:
    """The arguments of every `scripts/<script>` command in its own docstring and in the README's code."""
    # Fenced blocks only, each from its opening fence (```, ```bash) to its closing one: a bare search for
    # "```\n" would also start at a Python block's closing fence and read the prose after it as code.
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", (REPO / "README.md").read_text(), flags=re.S | re.M)
    text = load_script(script).__doc__ + "\n".join(code for lang, code in blocks if lang in ("", "bash"))
    commands = []
    for line in (line for line in text.splitlines() if f"scripts/{script}" in line):
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word.endswith(f"scripts/{script}"):
                rest = words[i + 1:]
                commands.append(rest[:rest.index("&&")] if "&&" in rest else rest)
    return commands


@pytest.mark.parametrize("script", ["quick_start.py", "compare_models.py"])
def test_every_documented_command_line_of_a_script_is_one_it_accepts(script: str) -> None:
    """quick_start's --help showed `--steps 1000`, which its parser rejects."""
    commands = documented_commands(script)
    assert len(commands) >= 2  # the docstring's examples and the README's
    module = load_script(script)
    for args in commands:
        module.parse_args(args)  # argparse exits (SystemExit 2) on a flag it does not know


@pytest.mark.slow
def test_quick_start_logs_losses_metrics_samples_system_a_loadable_best_checkpoint_and_resumes(
        tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("tracking: {learning_rate: 0.01}\ntrain: {log_every: 1}\n")
    out = run_script("quick_start.py", *TINY, "--config", "run.yaml", cwd=tmp_path).stdout
    (run_dir,) = list_runs(tmp_path / "runs")
    assert "tensorboard --logdir=runs" in out and "wandb sync runs/" in out
    assert "3 sample videos, one per evaluation" in out  # steps 0, 2 and 4
    acc = tensorboard_accumulator(run_dir)
    tags = acc.Tags()
    for key in ("train/loss", "train/learning_rate", "train/grad_norm", "val/loss", "video/psnr", "video/ssim",
                "sys/cpu_percent", "sys/process_rss_gb", "perf/samples_per_s", "perf/frames_per_s"):
        assert key in tags["scalars"], key
    assert [e.step for e in acc.Scalars("train/loss")][-1] == 4  # logged every log_every steps and at the end
    assert [e.step for e in acc.Scalars("video/psnr")] == [0, 2, 4]
    # The recipe watches the model: gradient norms and the Histograms tab at every evaluation after the start.
    assert [e.step for e in acc.Scalars("grad/global_norm")] == [2, 4]
    assert any(t.startswith("grad/") for t in tags["histograms"])
    assert any(t.startswith("samples/") for t in tags["images"]), "a sample clip (GIF) is in TensorBoard"
    assert RunStore(run_dir).events("video")
    assert (run_dir / "wandb").is_dir()
    config = RunStore(run_dir).config()  # what was recorded is what was used
    assert config["learning_rate"] == 0.01 == config["train"]["lr"] and config["train"]["batch_size"] == 2
    assert "max_epochs" not in config and config["train"]["epochs"] == 4
    assert max(e.value for e in acc.Scalars("train/learning_rate")) == pytest.approx(0.01)
    manager = CheckpointManager(tmp_path / "checkpoints" / run_dir.name)
    best = manager.load("best")  # verifies sha256, weights_only=True
    assert best.step in (2, 4) and "val/loss" in best.metrics

    # Resumed: the W&B run now has one offline folder per session, and the printed command names them all
    # (it used to name only the newest, so `wandb sync` uploaded steps 5-6 and lost 0-4).
    (tmp_path / "run.yaml").write_text("tracking: {learning_rate: 0.01, resume: true}\n"
                                       "train: {log_every: 1, resume: true}\n")
    out = run_script("quick_start.py", *TINY, "--max-steps", "6", "--config", "run.yaml", cwd=tmp_path).stdout
    assert list_runs(tmp_path / "runs") == [run_dir]
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    (sync,) = [line.split() for line in out.splitlines() if line.strip().startswith("wandb sync")]
    assert sorted(tmp_path / path for path in sync[2:]) == offline


@pytest.mark.slow
def test_compare_models_trains_both_and_logs_the_comparison(tmp_path: Path) -> None:
    proc = run_script("compare_models.py", *TINY, "--no-wandb", "--group", "cmp", cwd=tmp_path)
    out = proc.stdout
    # One progress bar per run on stderr (tqdm draws it there even when stderr is a pipe), none on stdout.
    for model in ("VideoGenerationModel", "TransformerModel"):
        assert re.search(model + r" +seed 0: 100%.*\| 4/4 ", proc.stderr), proc.stderr[-2000:]
    assert "4/4" not in out
    assert "VideoGenerationModel" in out and "TransformerModel" in out and "±" in out
    runs = {p.name: p for p in list_runs(tmp_path / "runs")}
    assert set(runs) == {"cmp-video_generation-seed0", "cmp-transformer-seed0", "cmp-summary"}
    summary = tensorboard_accumulator(runs["cmp-summary"])
    scalars = summary.Tags()["scalars"]
    for model in ("VideoGenerationModel", "TransformerModel"):
        for metric in ("val_loss", "video_psnr", "training_time"):
            assert f"{model}/{metric}" in scalars
    assert "comparison/bar_chart" in summary.Tags()["images"]
    table = summary.Tensors("comparison/table")[0].tensor_proto.string_val[0].decode()
    assert "VideoGenerationModel" in table and "TransformerModel" in table
    for model, name in (("video_generation", "cmp-video_generation-seed0"), ("transformer", "cmp-transformer-seed0")):
        hp = tensorboard_accumulator(runs[name]).PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info
        hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert (hparams["train/model"], hparams["train/seed"], hparams["train/batch_size"],
                hparams["train/total_steps"]) == (model, 0, 2, 4)
        # Logged once per run (by train), and its metrics not a second time beside them.
        store = RunStore(runs[name])
        assert len(store.events("hparams")) == 1
        steps = [step for step, _, _ in store.history("val/loss")]
        assert steps == [0, 2, 4]
        assert [step for step, _, _ in store.history("grad/global_norm")] == [2, 4]
        assert tensorboard_accumulator(runs[name]).Tags()["histograms"]
    assert RunStore(runs["cmp-transformer-seed0"]).config()["group"] == "cmp"
    assert "report: runs/cmp/report.html (every number in runs/cmp/stats.json)" in out.splitlines()
    assert "<title>cmp: VideoGenerationModel, TransformerModel over seeds 0" in (
        tmp_path / "runs" / "cmp" / "report.html").read_text()
    assert torch.isfinite(torch.tensor(RunStore(runs["cmp-summary"]).last("TransformerModel/val_loss")[1]))
