"""`OpusclipTracker` under accelerate's own `Accelerator`: a diffusers-style loop (gradient accumulation,
`accelerator.log` every optimisation step, one clip through the unwrapped tracker), in this process and under
`accelerate launch --num_processes 2 --cpu`. The run is read back from the store, TensorBoard and W&B."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from _readers import scalars
from _wandb_reader import read_wandb_run
from opusclip_track import RunStore, TrackingConfig, list_runs
from opusclip_track.media import read_video

# The training script a user would write; the tests run it unchanged in-process and under `accelerate launch`.
SCRIPT = '''
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from opusclip_track import AdvancedExperimentTracker
from opusclip_track.integrations.accelerate import OpusclipTracker


def main(out: Path) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tracker = OpusclipTracker(run_name="vdm-finetune", project_name="accel-test", log_dir=str(out / "runs"),
                              checkpoint_dir=str(out / "ckpt"), wandb_mode="offline", system_monitor_interval_s=0.0,
                              flush_interval_s=0.2)
    accelerator = Accelerator(log_with=[tracker], gradient_accumulation_steps=2, cpu=True)
    model = torch.nn.Conv3d(3, 3, 3, padding=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    clips = torch.rand(16, 3, 4, 16, 16)  # (N, C, T, H, W)
    loader = torch.utils.data.DataLoader(clips, batch_size=2)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    accelerator.init_trackers("accel-test", config={"learning_rate": 1e-2, "gradient_accumulation_steps": 2})
    logged, global_step = {}, 0
    for batch in loader:
        with accelerator.accumulate(model):
            loss = torch.nn.functional.mse_loss(model(batch + 0.1 * torch.randn_like(batch)), batch)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            global_step += 1
            logs = {"train/loss": loss.detach(), "train/lr": scheduler.get_last_lr()[0], "phase": "warmup"}
            accelerator.log(logs, step=global_step)
            logged[global_step] = {"train/loss": loss.item(), "train/lr": logs["train/lr"]}
    if accelerator.is_main_process:
        assert isinstance(accelerator.get_tracker("opusclip").tracker, AdvancedExperimentTracker)
        with torch.no_grad():
            sample = model(clips[:1]).clamp(0, 1)[0].permute(1, 0, 2, 3)  # (T, C, H, W)
        accelerator.get_tracker("opusclip", unwrap=True).log_video(sample, "samples", step=global_step, fps=4)
        (out / "logged.json").write_text(json.dumps({"processes": accelerator.num_processes, "steps": logged,
                                                         "distributed": str(accelerator.distributed_type)}))
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
'''


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train_accelerate.py"
    path.write_text(SCRIPT)
    return path


def _check_run(out: Path, processes: int) -> Path:
    """Exactly one run, holding every logged value at its step in the store, TensorBoard and W&B."""
    runs = list_runs(out / "runs")
    assert [r.name for r in runs] == ["vdm-finetune"]
    run_dir = runs[0]
    written = json.loads((out / "logged.json").read_text())
    assert written["processes"] == processes
    assert written["distributed"] == ("DistributedType.MULTI_CPU" if processes > 1 else "DistributedType.NO")
    # 16 clips in batches of 2, split over the processes, one optimiser step per 2 batches.
    logged = {int(step): values for step, values in written["steps"].items()}
    assert sorted(logged) == list(range(1, 16 // 2 // processes // 2 + 1))
    with RunStore(run_dir) as store:
        stored = {key: [(s, v) for s, _, v in store.history(key)] for key in ("train/loss", "train/lr")}
        meta = store.meta()
        texts = store.events("text", "phase")
        clips = store.events("video")
    backends = {"tensorboard": scalars("tensorboard", run_dir), "wandb": scalars("wandb", run_dir)}
    for key in ("train/loss", "train/lr"):
        expected = [(step, logged[step][key]) for step in sorted(logged)]
        assert stored[key] == expected
        for name, read in backends.items():
            assert [s for s, _ in read[key]] == [s for s, _ in expected], name
            assert [v for _, v in read[key]] == pytest.approx([v for _, v in expected], rel=1e-6), name
    assert [e["step"] for e in texts] == sorted(logged) and texts[0]["data"]["text"] == "warmup"
    assert meta["status"] == "finished" and meta["config"]["project_name"] == "accel-test"
    hparams = RunStore(run_dir).events("hparams")
    assert hparams[0]["data"]["params"] == {"learning_rate": 1e-2, "gradient_accumulation_steps": 2}
    assert read_wandb_run(run_dir)["config"]["learning_rate"] == 1e-2
    (clip,) = clips
    assert clip["step"] == max(logged)
    frames, _ = read_video(clip["path"])
    assert tuple(frames.shape) == (4, 3, 16, 16)
    return run_dir


def test_a_diffusers_style_loop_logs_every_step(script: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("train_accelerate", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    _check_run(tmp_path, processes=1)


def test_two_processes_under_accelerate_launch_write_one_run(script: Path, tmp_path: Path) -> None:
    # `accelerate launch --cpu` starts one process unless mpirun is configured; `--multi_gpu` is accelerate's
    # torchrun launcher, and the script's `Accelerator(cpu=True)` makes the two processes a gloo group on the CPU.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no", str(script), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = _check_run(tmp_path, processes=2)
    assert len(list(run_dir.rglob("*.wandb"))) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_options_are_checked_where_the_tracker_is_created() -> None:
    from opusclip_track.integrations.accelerate import OpusclipTracker

    with pytest.raises(TypeError, match="use_wandb"):
        OpusclipTracker(run_name="r", use_wandb="no")
    with pytest.raises(TypeError, match="not both"):
        OpusclipTracker(config=TrackingConfig(experiment_name="e"), log_dir="x")
    assert OpusclipTracker(config=TrackingConfig(experiment_name="e"), run_name="named").config.run_name == "named"
