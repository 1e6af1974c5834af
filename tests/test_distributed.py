"""Distributed pieces in one process: rank and world size from a launcher's environment, a generated name's mark,
the refusal to guess rank 0's name without a store, and the checkpoint reader other ranks use. The same pieces on
two real processes are tested in `tests/test_torchrun.py`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from opusclip_track import AdvancedExperimentTracker, TrackingConfig
from opusclip_track.checkpoint import CheckpointError, CheckpointInfo, CheckpointManager
from opusclip_track.distributed import RankZeroChannel, get_rank, get_world_size, refresh_rank

_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK",
                       "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "MASTER_ADDR", "MASTER_PORT",
                       "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT")


@pytest.fixture
def launcher() -> Iterator[pytest.MonkeyPatch]:
    """A clean launcher environment; the rank the tracker caches is re-read once it is restored."""
    with pytest.MonkeyPatch.context() as patch:
        for name in _LAUNCHER_VARIABLES:
            patch.delenv(name, raising=False)
        yield patch
    refresh_rank()


def test_rank_and_world_size_come_from_the_launchers_environment(launcher: pytest.MonkeyPatch) -> None:
    assert (get_rank(), get_world_size()) == (0, 1)
    launcher.setenv("SLURM_PROCID", "3")
    launcher.setenv("SLURM_NTASKS", "8")
    assert (get_rank(), get_world_size()) == (3, 8)
    launcher.setenv("RANK", "1")
    launcher.setenv("WORLD_SIZE", "2")
    assert (get_rank(), get_world_size()) == (1, 2)  # torchrun's variables first
    assert not RankZeroChannel.available()  # neither torchrun's store nor a process group
    assert RankZeroChannel("x").publish("k", "v") is False


def test_a_generated_run_name_is_marked_as_generated() -> None:
    generated = TrackingConfig(experiment_name="vgen", use_wandb=False)
    assert generated.run_name_generated and str(generated.run_name).startswith("vgen-")
    assert not TrackingConfig(experiment_name="vgen", run_name="mine").run_name_generated
    assert not TrackingConfig.from_dict(generated.to_dict(redact=False)).run_name_generated  # given from now on
    assert "_generated_run_name" not in generated.to_dict()
    generated.run_name = "renamed"
    assert not generated.run_name_generated
    generated.use_generated_run_name("vgen-from-rank-0")
    assert generated.run_name_generated and generated.run_name == "vgen-from-rank-0"


def test_a_non_zero_rank_without_a_store_refuses_to_guess_rank_zeros_name(launcher: pytest.MonkeyPatch,
                                                                          runs_dir: Path) -> None:
    launcher.setenv("RANK", "1")
    launcher.setenv("WORLD_SIZE", "2")
    options: dict[str, Any] = {"experiment_name": "vgen", "log_dir": str(runs_dir), "use_wandb": False,
                               "system_monitor_interval_s": 0.0}
    with pytest.raises(RuntimeError, match=r"run_name: rank 1 of 2 cannot learn rank 0's run name \(generated\)"
                                           r".*init_process_group\(\) before creating the tracker"):
        AdvancedExperimentTracker(**options)
    with pytest.raises(RuntimeError, match=r"rank 0's run name \(with resume=True\)"):
        AdvancedExperimentTracker(run_name="mine", resume=True, **options)
    with AdvancedExperimentTracker(run_name="mine", **options) as tracker:  # a given name is everyone's already
        tracker.log_metrics({"loss": 1.0})
        assert tracker.save_checkpoint(torch.nn.Linear(2, 2)) is None  # nothing to wait through: said in the docs
    assert not runs_dir.exists()


def test_a_reading_manager_sees_the_writers_saves_and_never_touches_its_files(tmp_path: Path) -> None:
    writer = CheckpointManager(tmp_path, keep_last=2)
    writer.save(torch.nn.Linear(2, 2), epoch=0, step=1)
    in_flight = tmp_path / ".ckpt-step00000002.pt.123.tmp"  # the writer's temp file of a save in progress
    in_flight.write_bytes(b"partial")
    reader = CheckpointManager(tmp_path, read_only=True)
    assert in_flight.exists()  # a writer's manager would have removed it as a stray
    model = torch.nn.Linear(2, 2)
    writer.save(model, epoch=0, step=2)
    latest = reader.latest
    assert latest is not None and latest.step == 2  # re-read, not the manifest it opened with
    loaded = torch.nn.Linear(2, 2)
    assert reader.load("latest", loaded).step == 2
    assert torch.equal(loaded.weight, model.weight)
    with pytest.raises(CheckpointError, match="only reads"):
        reader.save(model, epoch=0, step=3)
    assert not CheckpointManager(tmp_path / "missing", read_only=True).checkpoints
    assert not (tmp_path / "missing").exists()


def test_on_failed_receives_the_entry_and_error_of_a_failed_background_write(tmp_path: Path) -> None:
    failures: list[tuple[CheckpointInfo, BaseException]] = []
    directory = tmp_path / "ckpts"
    manager = CheckpointManager(directory, async_save=True, on_failed=lambda info, e: failures.append((info, e)))
    shutil.rmtree(directory)
    directory.write_text("a file where the directory was")  # the background write cannot create its file
    manager.save(torch.nn.Linear(2, 2), epoch=0, step=5)
    with pytest.raises(CheckpointError):
        manager.wait()
    ((info, error),) = failures
    assert (info.file, info.step, info.size) == ("ckpt-step00000005.pt", 5, 0)
    assert isinstance(error, OSError)
