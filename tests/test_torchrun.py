"""Multi-process runs for real: `torchrun --nproc_per_node 2` on a gloo group on the CPU (`tests/_torchrun_scripts.py`).

One launch runs a training script on two ranks that both log, reduce, score clips, save and load checkpoints; the
tests read its run back through each backend's own reader (the store, TensorBoard's `EventAccumulator`, the W&B
offline run, `MlflowClient`) and compare every record with what rank 0 logged. A second launch (two plain processes
with the rank in their environment, as mpirun or srun start them) covers launchers other than torchrun.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _torchrun_scripts import SHARDS, STEPS, video_metrics
from mlflow import MlflowClient
from test_metrics_learned import i3d_dir, inception_dir, weights_root  # noqa: F401  (random-init networks)

from _readers import read_back
from opusclip_track import RunStore, TrackingConfig, list_runs
from opusclip_track.backends.mlflow import resolve_tracking_uri
from opusclip_track.checkpoint import MANIFEST_NAME
from opusclip_track.metrics import weights

SCRIPT = Path(__file__).with_name("_torchrun_scripts.py")
REPO = Path(__file__).resolve().parents[1]
PROJECT = "torchrun-test"


def _environment(out: Path) -> dict[str, str]:
    """Offline everything, one thread per process, no credentials, the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_", "TORCHELASTIC_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", WANDB_SILENT="true", WANDB_DISABLE_GIT="true",
               WANDB_CONFIG_DIR=str(out / ".wandb-config"), WANDB_CACHE_DIR=str(out / ".wandb-cache"),
               NETRC=str(out / "no-netrc"), TORCH_HOME=str(out / "torch-home"))
    env[weights.ENV_OFFLINE] = "1"
    env.pop(weights.ENV_WEIGHTS_DIR, None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _failure(out: Path, what: str) -> str:
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(out.glob("*.log")))
    return f"{what} failed:\n{logs}"


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, inception_dir: Path,  # noqa: F811
        i3d_dir: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    """Launch the script under torchrun once; meanwhile score all the clips in this one process."""
    assert inception_dir == i3d_dir  # both networks in one weights directory
    out = tmp_path_factory.mktemp("torchrun")
    torchrun = Path(sys.executable).with_name("torchrun")
    with open(out / "torchrun.log", "w") as log:
        process = subprocess.Popen([str(torchrun), "--nproc_per_node", "2", str(SCRIPT), "torchrun", str(out),
                                    str(inception_dir)], cwd=out, env=_environment(out), stdout=log,
                                   stderr=subprocess.STDOUT)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the workers: the same float32 features, bit for bit
        try:
            one_process = video_metrics(inception_dir, list(SHARDS))
            assert process.wait(timeout=300) == 0, _failure(out, "torchrun")
        finally:
            torch.set_num_threads(threads)
            if process.poll() is None:
                process.kill()
    ranks = [json.loads((out / f"torchrun-rank{rank}.json").read_text()) for rank in (0, 1)]
    yield {"out": out, "ranks": ranks, "one_process": one_process}


def _config(job: dict[str, Any]) -> TrackingConfig:
    return TrackingConfig(experiment_name="ddp", project_name=PROJECT, run_name=job["ranks"][0]["run_name"],
                          log_dir=str(job["out"] / "runs"))


def test_a_generated_run_name_is_rank_zeros_on_every_rank(job: dict[str, Any]) -> None:
    rank0, rank1 = job["ranks"]
    # Each process generated its own name in TrackingConfig; the tracker took rank 0's everywhere, whether it was
    # created before init_process_group (through torchrun's store) or after it.
    assert rank0["name_generated_here"] != rank1["name_generated_here"]
    assert rank1["run_name"] == rank0["run_name"] == rank0["name_generated_here"]
    assert rank1["early_run_name"] == rank0["early_run_name"] != rank1["run_name"]
    assert [p.name for p in list_runs(job["out"] / "runs")] == [rank0["run_name"]]
    assert [p.name for p in list_runs(job["out"] / "early-runs")] == [rank0["early_run_name"]]


def test_one_run_holds_rank_zeros_records_once_in_every_backend(job: dict[str, Any]) -> None:
    config = _config(job)
    expected = [(step, float(step)) for step in range(STEPS)]  # rank 0 logged loss = step; rank 1 100 + step
    with RunStore(config.run_dir) as store:
        assert [(s, v) for s, _, v in store.history("train/loss")] == expected
        assert [v for _, _, v in store.history("train/rank")] == [0.0] * STEPS
        assert [(s, v) for s, _, v in store.history("train/mean_over_ranks")] == [(STEPS - 1, 1.5)]
        assert [e["data"]["text"] for e in store.events("text", "notes")] == ["written by rank 0"]
        assert [e["data"]["params"] for e in store.events("hparams")] == [{"lr": 0.1, "rank": 0}]
        assert len(store.events("video")) == 1
        assert store.meta()["status"] == "finished"
    for backend in ("tensorboard", "wandb", "mlflow"):
        shown = read_back(backend, config)
        assert shown.scalars["train/loss"] == expected, backend
        assert shown.scalars["train/rank"] == [(step, 0.0) for step in range(STEPS)], backend
        assert shown.scalars["train/mean_over_ranks"] == [(STEPS - 1, 1.5)], backend
        assert shown.texts["notes"] == [(0, "written by rank 0")], backend
        assert [frames for clips in shown.clips.values() for _, frames in clips] == [4], backend  # rank 0's clip
        assert shown.status == "finished", backend
    assert len(list(config.run_dir.rglob("*.wandb"))) == 1
    client = MlflowClient(resolve_tracking_uri(None, config.run_dir))
    experiment = client.get_experiment_by_name(PROJECT)
    assert experiment is not None and len(client.search_runs([experiment.experiment_id])) == 1


def test_reduce_mean_and_metric_classes_equal_one_process_over_all_clips(job: dict[str, Any]) -> None:
    rank0, rank1 = job["ranks"]
    assert rank0["reduce_mean"] == rank1["reduce_mean"] == 1.5  # mean of 1 and 2
    one_process = job["one_process"]
    assert len(one_process["ssim_frame_scores"]) == 3  # both shards: clips 0-1 from rank 0, clip 2 from rank 1
    for report in (rank0, rank1):  # compute() reduces over the ranks and returns the union on each
        got = report["metrics"]
        assert got.keys() == one_process.keys()
        for key in ("psnr", "ssim", "video/psnr", "video/ssim", "video/flicker", "video/temporal_diff"):
            assert got[key] == pytest.approx(one_process[key], rel=1e-12), key
        for key in ("fid", "fvd"):  # sums of the same features' statistics
            assert got[key] == pytest.approx(one_process[key], rel=1e-12), key
        for key in ("psnr_curve", "ssim_frame_scores"):  # gathered rows in rank order: clip order
            np.testing.assert_allclose(got[key], one_process[key], rtol=1e-12, err_msg=key)
    assert one_process["fid"] > 0 and one_process["fvd"] > 0


def test_evaluate_videos_on_every_rank_scores_every_clip_and_rank_zero_logs_it_once(job: dict[str, Any]) -> None:
    # VideoMetrics' curves are a collective: every rank must compute them, not rank 0 alone (which deadlocked).
    one_process = job["one_process"]
    for report in job["ranks"]:
        for key in ("video/psnr", "video/ssim"):
            assert report["evaluated"][key] == pytest.approx(one_process[key], rel=1e-12), key
    with RunStore(_config(job).run_dir) as store:
        assert [(s, v) for s, _, v in store.history("video/psnr")] == [
            (STEPS, pytest.approx(one_process["video/psnr"], rel=1e-12))]
        assert len(store.events("table", "video/per_frame")) == 1
        assert store.config()["video_metric_protocol"]["num_videos"] == 3  # both ranks' clips, not rank 0's 2


def test_a_checkpoint_is_saved_once_and_loaded_on_every_rank(job: dict[str, Any]) -> None:
    rank0, rank1 = (report["checkpoints"] for report in job["ranks"])
    directory = job["out"] / "ckpt" / job["ranks"][0]["run_name"]
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert [e["file"] for e in manifest["checkpoints"]] == [rank0["file"]]  # the failed save left nothing
    assert sorted(p.name for p in directory.iterdir()) == sorted([MANIFEST_NAME, rank0["file"]])
    # Rank 1 returned rank 0's entry, with the file and its sha256 already on disk (a synchronous save).
    assert rank0["returned"] and rank1["returned"]
    for key in ("file", "size", "sha256"):
        assert rank1[key] == rank0[key] == manifest["checkpoints"][0][key]
    assert rank0["on_disk_at_return"] and rank1["on_disk_at_return"]
    # Rank 0 saved its model (all 1.0; rank 1's was 2.0) and every rank loaded that file.
    assert rank0["loaded_weights"] == rank1["loaded_weights"] == [1.0]
    assert rank0["loaded_step"] == rank1["loaded_step"] == STEPS
    # Rank 0's failure reaches every rank instead of leaving rank 1 waiting.
    assert rank0["failed_save"].startswith("TypeError: checkpoint['extra']['bad']: expected tensors")
    assert rank1["failed_save"].startswith("CheckpointSaveError: run ")
    assert "rank 0 failed saving checkpoint 1: TypeError(" in rank1["failed_save"]


def test_an_async_checkpoint_returns_at_the_copy_and_loads_once_written(job: dict[str, Any]) -> None:
    rank0, rank1 = (report["async"] for report in job["ranks"])
    file, size, sha256 = rank0["returned"]
    assert rank1["returned"] == rank0["returned"] == [file, 0, ""]  # the entry before the background write
    assert rank1["latest"] == rank0["latest"] and rank0["latest"][0] == file and rank0["latest"][1] > 0
    assert rank0["latest_sha256_on_disk"] == rank1["latest_sha256_on_disk"] == rank0["latest"][2]
    assert rank0["loaded_weights"] == rank1["loaded_weights"] == [1.0]


def test_the_system_monitor_samples_the_node_once(job: dict[str, Any]) -> None:
    rank0, rank1 = job["ranks"]
    assert (rank0["monitor_threads"], rank1["monitor_threads"]) == (1, 0)
    assert rank0["performance"]["sys/process_rss_gb"] > 0 and rank1["performance"] is None
    with RunStore(_config(job).run_dir) as store:
        samples = store.history("sys/process_rss_gb")
    assert len(samples) >= 2  # the background samples and log_performance_metrics, all from rank 0
    assert len({wall for _, wall, _ in samples}) == len(samples)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_another_launcher_agrees_on_names_once_the_process_group_exists(tmp_path: Path) -> None:
    env = {**_environment(tmp_path), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    processes = []
    for rank in (0, 1):
        with open(tmp_path / f"launcher-{rank}.log", "w") as log:
            processes.append(subprocess.Popen([sys.executable, str(SCRIPT), "launcher", str(tmp_path)], cwd=tmp_path,
                                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=log,
                                              stderr=subprocess.STDOUT))
    try:
        assert [p.wait(timeout=120) for p in processes] == [0, 0], _failure(tmp_path, "launcher")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    rank0, rank1 = (json.loads((tmp_path / f"launcher-rank{r}.json").read_text()) for r in (0, 1))
    # Before init_process_group there is no store: rank 0 keeps its name, rank 1 says what to do.
    assert rank0["before_init_error"] is None
    assert rank1["before_init_error"].startswith("RuntimeError: run_name: rank 1 of 2 cannot learn rank 0's run "
                                                 "name (generated)")
    assert "init_process_group() before creating the tracker" in rank1["before_init_error"]
    assert rank0["given_run_name"] == rank1["given_run_name"] == "given-name"
    assert rank1["run_name"] == rank0["run_name"]  # through the process group's store
    names = {p.name for p in list_runs(tmp_path / "launcher-runs")}
    assert rank0["run_name"] in names and "given-name" in names and len(names) == 3
