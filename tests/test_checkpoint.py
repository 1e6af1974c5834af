"""CheckpointManager on real files: crash safety under SIGKILL, retention, async save, resume, safe loading."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from opusclip_track.checkpoint import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointManager,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CheckpointUnsafeError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# -- helpers -------------------------------------------------------------------------------------------------


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _training_objects(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(16, 4) * (1 + random.random()) + float(np.random.rand())  # every RNG feeds the loop
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def _assert_tree_equal(a: Any, b: Any, where: str = "payload") -> None:
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_tree_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_tree_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_manifest_consistent(directory: Path) -> dict[str, Any]:
    """Every file the manifest lists exists with the recorded size and sha256; pointers resolve."""
    manifest = json.loads((directory / "manifest.json").read_text())
    files = [entry["file"] for entry in manifest["checkpoints"]]
    for entry in manifest["checkpoints"]:
        path = directory / entry["file"]
        assert path.exists(), f"manifest lists {path} but it is missing"
        assert path.stat().st_size == entry["size"], path
        assert _sha256(path) == entry["sha256"], path
    assert manifest["latest"] == files[-1]
    assert manifest["best"] is None or manifest["best"] in files
    return manifest


# -- crash safety --------------------------------------------------------------------------------------------

# A fork server: torch is imported once, then each trial is a forked child that saves ~21 MB checkpoints in a
# loop until the test SIGKILLs it. Re-importing torch per trial would cost ~2 s each on a small machine.
_KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import torch
    from opusclip_track.checkpoint import CheckpointManager

    torch.set_num_threads(1)
    directory = sys.argv[1]

    def save_forever():
        manager = CheckpointManager(directory, keep_last=2, keep_best=1, monitor="loss", mode="min")
        model = torch.nn.Linear(2048, 2560)  # 5.2 M params, ~21 MB per checkpoint
        step = 0 if manager.latest is None else manager.latest.step + 1
        announced = False
        deadline = time.monotonic() + 30  # never outlive a failed test
        while time.monotonic() < deadline:
            if not announced and manager.latest is not None:
                print("ready", flush=True)  # a checkpoint exists: the test may kill from now on
                announced = True
            with torch.no_grad():
                model.weight.fill_(step)
                model.bias.fill_(-step)
            manager.save(model, epoch=step // 10, step=step, metrics={"loss": (step * 7919) % 13})
            step += 1

    for line in sys.stdin:
        if line.strip() != "go":
            break
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                save_forever()
            finally:
                os._exit(0)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""")


def test_sigkill_during_saves_always_leaves_a_loadable_latest(tmp_path: Path) -> None:
    script = tmp_path / "save_loop.py"
    script.write_text(_KILL_SCRIPT)
    directory = tmp_path / "ckpts"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen([sys.executable, str(script), str(directory)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdin is not None and server.stdout is not None
    delays = random.Random(20240607)
    model = torch.nn.Linear(2048, 2560)
    interrupted_writes = 0
    try:
        for _trial in range(22):
            server.stdin.write("go\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            assert server.stdout.readline().strip() == "ready"
            time.sleep(delays.uniform(0.0, 0.5))
            os.kill(pid, signal.SIGKILL)
            assert server.stdout.readline().strip() == "reaped"

            manifest = _assert_manifest_consistent(directory)
            listed = {entry["file"] for entry in manifest["checkpoints"]}
            strays = {p.name for p in directory.iterdir()} - listed - {"manifest.json"}
            interrupted_writes += bool(strays)

            manager = CheckpointManager(directory)  # opening cleans up what the kill left behind
            assert {p.name for p in directory.iterdir()} == listed | {"manifest.json"}
            loaded = manager.load("latest", model)
            assert loaded.step == manager.latest.step == manifest["checkpoints"][-1]["step"]
            assert torch.all(model.weight == loaded.step) and torch.all(model.bias == -loaded.step)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    # The kills must have landed mid-write sometimes, or this test would not test what it claims to.
    assert interrupted_writes >= 1


# -- retention -----------------------------------------------------------------------------------------------

_LOSSES = [0.9, 0.5, 0.7, 0.3, 0.8, 0.6, 0.95]


@pytest.mark.parametrize(("mode", "kept_steps", "best_step"), [("min", [1, 3, 5, 6], 3), ("max", [0, 5, 6], 6)])
def test_keeps_last_n_and_best_k_and_never_deletes_the_best(
        tmp_path: Path, mode: str, kept_steps: list[int], best_step: int) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=2, monitor="val/loss", mode=mode)  # type: ignore[arg-type]
    model = torch.nn.Linear(3, 3)
    for step, loss in enumerate(_LOSSES):
        manager.save(model, epoch=0, step=step, metrics={"val/loss": torch.tensor(loss)})
        assert manager.best is not None and manager.best.path.exists()
        _assert_manifest_consistent(tmp_path)
        on_disk = sorted(p.name for p in tmp_path.glob("ckpt-*.pt"))
        assert on_disk == sorted(info.file for info in manager.list())

    assert [info.step for info in manager.checkpoints] == kept_steps
    assert manager.best.step == best_step and manager.latest.step == 6
    assert manager.load("best").metrics == {"val/loss": pytest.approx(_LOSSES[best_step])}
    assert json.loads((tmp_path / "manifest.json").read_text())["best"] == manager.best.file


def test_save_without_monitored_metric_is_kept_only_as_recent(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=1, monitor="val/loss")
    model = torch.nn.Linear(2, 2)
    manager.save(model, epoch=0, step=0, metrics={"val/loss": 1.0})
    manager.save(model, epoch=0, step=1, metrics={"train/loss": 0.1})
    manager.save(model, epoch=0, step=2)
    assert [info.step for info in manager.checkpoints] == [0, 2]
    assert manager.best.step == 0


def test_same_step_saved_twice_gets_a_new_version_instead_of_overwriting(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=5)
    model = torch.nn.Linear(2, 2)
    first = manager.save(model, epoch=0, step=7)
    second = manager.save(model, epoch=1, step=7)
    assert (first.file, second.file) == ("ckpt-step00000007.pt", "ckpt-step00000007-v1.pt")
    _assert_manifest_consistent(tmp_path)


# -- async save ----------------------------------------------------------------------------------------------


def test_async_save_writes_the_same_content_as_sync_save(tmp_path: Path) -> None:
    model, optimizer, scheduler = _training_objects(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _seed(1)
    _train(model, optimizer, scheduler, 3)
    args = (model, optimizer, scheduler, scaler)
    kwargs: dict[str, Any] = {"epoch": 2, "step": 30, "metrics": {"val/loss": 0.25}, "extra": {"seen": [1, 2]}}
    sync_info = CheckpointManager(tmp_path / "sync").save(*args, **kwargs)
    with CheckpointManager(tmp_path / "async", async_save=True) as manager:
        manager.save(*args, **kwargs)
    async_info = manager.latest

    sync_payload = torch.load(sync_info.path, weights_only=True)
    async_payload = torch.load(async_info.path, weights_only=True)
    _assert_tree_equal(sync_payload, async_payload)  # every tensor, the RNG states, counters and extra
    assert sync_payload["rng"]["torch"].numel() > 0 and len(sync_payload["rng"]["python"][1]) == 625
    assert (async_info.size, async_info.sha256) == (async_info.path.stat().st_size, _sha256(async_info.path))


def test_async_save_snapshots_state_and_a_second_save_waits_for_the_first(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=5, async_save=True)
    model = torch.nn.Linear(256, 256)
    with torch.no_grad():
        model.weight.fill_(1.0)
        manager.save(model, epoch=0, step=1)
        model.weight.fill_(2.0)  # training goes on while the first write may still be running
        manager.save(model, epoch=0, step=2)
        model.weight.fill_(3.0)
    manager.close()
    assert [info.step for info in manager.checkpoints] == [1, 2]
    _assert_manifest_consistent(tmp_path)
    for info, value in zip(manager.checkpoints, (1.0, 2.0), strict=True):
        loaded = manager.load(info.file, model, restore_rng=False)
        assert loaded.step == info.step and torch.all(model.weight == value)


def test_an_async_save_returns_the_entry_before_its_write_even_when_the_writer_finishes_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer thread fills in size and sha256; it once did so in the very dict save() then returned, so the
    # result depended on which thread ran first (a torchrun test saw both). Here the writer always wins.
    from opusclip_track.checkpoint.background import BackgroundWriter

    start = BackgroundWriter.start

    def start_and_finish(self: BackgroundWriter, *args: Any, **kwargs: Any) -> Any:
        started = start(self, *args, **kwargs)
        self.wait()
        return started

    monkeypatch.setattr(BackgroundWriter, "start", start_and_finish)
    manager = CheckpointManager(tmp_path, async_save=True)
    info = manager.save(torch.nn.Linear(8, 8), epoch=0, step=3)
    assert (info.size, info.sha256) == (0, "")  # as documented: final once wait() returns, in manager.latest
    latest = manager.latest
    assert latest is not None and latest.file == info.file and latest.size == info.path.stat().st_size > 0
    assert latest.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
    manager.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_async_save_of_cuda_tensors_is_the_state_at_save_time(tmp_path: Path) -> None:
    # CUDA state goes to pinned host memory with non_blocking copies and an event the writer waits on: the saved
    # bytes are the state at the call even though training changes the weights before the copy is awaited.
    model = torch.nn.Linear(1024, 1024).cuda()
    expected = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with CheckpointManager(tmp_path, async_save=True) as manager:
        manager.save(model, epoch=0, step=1)
        with torch.no_grad():
            model.weight.add_(1.0)
    assert manager.latest is not None
    payload = torch.load(manager.latest.path, weights_only=True)
    assert payload["model"].keys() == expected.keys()
    assert all(torch.equal(payload["model"][k], v) for k, v in expected.items())
    _assert_manifest_consistent(tmp_path)


def test_on_saved_receives_each_final_entry_once_it_is_on_disk(tmp_path: Path) -> None:
    seen: list[tuple[int, bool, bool]] = []

    def on_saved(info: Any) -> None:
        seen.append((info.step, info.path.exists(), info.sha256 == _sha256(info.path)))

    with CheckpointManager(tmp_path, async_save=True, on_saved=on_saved) as manager:
        for step in range(3):
            manager.save(torch.nn.Linear(8, 8), epoch=0, step=step)
    assert seen == [(0, True, True), (1, True, True), (2, True, True)]


@pytest.mark.parametrize("next_call", ["save", "wait", "close"])
def test_background_save_error_is_raised_on_the_next_call(tmp_path: Path, next_call: str) -> None:
    directory = tmp_path / "ckpts"
    manager = CheckpointManager(directory, async_save=True)
    model = torch.nn.Linear(2, 2)
    shutil.rmtree(directory)
    directory.write_text("a file where the directory was")  # the background write cannot create its file
    manager.save(model, epoch=0, step=5)
    with pytest.raises(CheckpointSaveError, match=r"ckpt-step00000005\.pt.*(FileExistsError|NotADirectoryError)"):
        if next_call == "save":
            manager.save(model, epoch=0, step=6)
        else:
            getattr(manager, next_call)()
    assert manager.latest is None
    manager.wait()  # reported once, not forever


# -- resume --------------------------------------------------------------------------------------------------


def test_resume_restores_model_optimizer_scheduler_rng_and_step(tmp_path: Path) -> None:
    model, optimizer, scheduler = _training_objects(0)
    _seed(123)
    _train(model, optimizer, scheduler, 5)
    CheckpointManager(tmp_path).save(model, optimizer, scheduler, epoch=1, step=5, metrics={"loss": 0.5})
    _train(model, optimizer, scheduler, 5)
    uninterrupted = (_draws(), [p.clone() for p in model.parameters()], scheduler.get_last_lr())

    model2, optimizer2, scheduler2 = _training_objects(99)  # different init, fresh optimizer state
    _seed(999)
    loaded = CheckpointManager(tmp_path).load("latest", model2, optimizer2, scheduler2)
    assert (loaded.epoch, loaded.step, loaded.metrics) == (1, 5, {"loss": 0.5})
    _train(model2, optimizer2, scheduler2, 5)
    resumed = (_draws(), [p.clone() for p in model2.parameters()], scheduler2.get_last_lr())

    assert resumed[0] == uninterrupted[0]  # random, numpy and torch continue the same sequences
    for a, b in zip(resumed[1], uninterrupted[1], strict=True):
        assert torch.equal(a, b)
    assert resumed[2] == uninterrupted[2]


def test_load_without_rng_restore_leaves_generators_alone(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    _seed(0)
    manager.save(torch.nn.Linear(2, 2), epoch=0, step=0)
    _seed(1)
    expected = _draws()
    _seed(1)
    manager.load(restore_rng=False)
    assert _draws() == expected


# -- corruption and unsafe files -----------------------------------------------------------------------------


def _saved(tmp_path: Path) -> tuple[CheckpointManager, Path]:
    manager = CheckpointManager(tmp_path)
    info = manager.save(torch.nn.Linear(64, 64), epoch=0, step=3)
    return manager, info.path


def test_flipped_byte_is_a_sha256_mismatch_naming_the_file(tmp_path: Path) -> None:
    manager, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=rf"{path.name}: sha256 mismatch"):
        manager.load("latest")


def test_truncated_file_is_a_size_mismatch(tmp_path: Path) -> None:
    manager, path = _saved(tmp_path)
    size = path.stat().st_size
    os.truncate(path, size // 2)
    with pytest.raises(CheckpointCorruptError, match=rf"{path.name}: size {size // 2} != manifest {size}"):
        manager.load("latest")
    with pytest.raises(CheckpointCorruptError, match="not a torch file"):  # outside the manifest's protection
        shutil.copy(path, tmp_path / "copy.pt")
        manager.load(tmp_path / "copy.pt")


def test_missing_and_unknown_checkpoints_get_clear_errors(tmp_path: Path) -> None:
    manager, path = _saved(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="no 'best' checkpoint"):
        manager.load("best")
    path.unlink()
    with pytest.raises(CheckpointNotFoundError, match=rf"{path.name}: checkpoint file does not exist"):
        manager.load("latest")
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointCorruptError, match=r"noise\.pt: not a torch file"):
        manager.load(tmp_path / "noise.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointCorruptError, match="not an opusclip-track checkpoint"):
        manager.load(tmp_path / "plain.pt")


class _RunsCodeOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_file_with_pickled_code_is_refused_and_the_code_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "opusclip-track-checkpoint", "model": _RunsCodeOnLoad(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    manager = CheckpointManager(tmp_path / "ckpts")
    with pytest.raises(CheckpointUnsafeError, match=r"evil\.pt: refuses pickled code"):
        manager.load(path)
    assert not marker.exists()


# -- manifest metadata, cleanup, bad input -------------------------------------------------------------------


def test_manifest_records_metadata_and_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    info = CheckpointManager(tmp_path / "a", run_name="run-1").save(
        torch.nn.Linear(2, 2), epoch=4, step=40, metrics={"val/psnr": 31.5})
    entry = json.loads((tmp_path / "a" / "manifest.json").read_text())["checkpoints"][0]
    assert entry == {"file": "ckpt-step00000040.pt", "step": 40, "epoch": 4, "metrics": {"val/psnr": 31.5},
                     "size": info.path.stat().st_size, "sha256": _sha256(info.path), "time": info.time,
                     "git_commit": head, "run_name": "run-1"}
    monkeypatch.chdir(tmp_path)  # not a git repository
    assert CheckpointManager(tmp_path / "b").save(torch.nn.Linear(2, 2), epoch=0, step=0).git_commit is None


def test_secret_keys_in_extra_never_reach_the_file(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(torch.nn.Linear(2, 2), epoch=0, step=0, extra={"wandb_api_key": "abc123", "lr": 0.1})
    assert manager.load().extra == {"wandb_api_key": "***REDACTED***", "lr": 0.1}
    assert b"abc123" not in manager.latest.path.read_bytes()


def test_opening_a_directory_removes_temp_files_and_orphans_but_not_listed_files(tmp_path: Path) -> None:
    manager, path = _saved(tmp_path)
    (tmp_path / ".ckpt-step00000004.pt.1234.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "ckpt-step00000004.pt").write_bytes(b"written, not yet in the manifest")
    (tmp_path / "notes.txt").write_text("user file")
    CheckpointManager(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "manifest.json", "notes.txt"])


def test_bad_arguments_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"keep_last: expected an int >= 1, received 0"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match=r"mode: expected 'min' or 'max', received 'avg'"):
        CheckpointManager(tmp_path, mode="avg")  # type: ignore[arg-type]
    manager = CheckpointManager(tmp_path)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"step: expected an int >= 0, received -1"):
        manager.save(model, epoch=0, step=-1)
    with pytest.raises(ValueError, match=r"metrics\['acc'\]: expected a number .* received 'high'"):
        manager.save(model, epoch=0, step=0, metrics={"acc": "high"})
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\['when'\]: .* received PosixPath"):
        manager.save(model, epoch=0, step=0, extra={"when": Path("x")})
    assert manager.latest is None and not list(tmp_path.glob("*.pt"))
    manager.save(model, epoch=0, step=0)
    with pytest.raises(CheckpointError, match="optimizer was given but the checkpoint holds no optimizer"):
        manager.load("latest", model, torch.optim.SGD(model.parameters(), lr=0.1))


# -- a manifest is data read from disk: every path in it must stay inside its directory ------------------------


@pytest.mark.parametrize("escape", ["../../victim.txt", "ABSOLUTE", "sub/../../../victim.txt", "SYMLINK"])
def test_a_manifest_entry_outside_the_directory_is_corrupt_and_nothing_outside_is_deleted(
        tmp_path: Path, escape: str) -> None:
    """`"file": "../../victim.txt"` made the next save's pruning delete a file outside the directory."""
    directory = tmp_path / "checkpoints" / "run"
    victim = tmp_path / "victim.txt"
    victim.write_text("a researcher's file")
    CheckpointManager(directory, keep_last=1).save(torch.nn.Linear(2, 2), epoch=0, step=1)
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if escape == "SYMLINK":  # a listed name that is a link out of the directory
        (directory / "ckpt-step00000001.pt").unlink()
        (directory / "ckpt-step00000001.pt").symlink_to(victim)
        name = "ckpt-step00000001.pt"
    else:
        name = str(victim) if escape == "ABSOLUTE" else escape
        manifest["checkpoints"][0]["file"] = name
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(CheckpointCorruptError, match=rf"manifest\.json: entry 0.*{name}"):
        manager = CheckpointManager(directory, keep_last=1)
        manager.save(torch.nn.Linear(2, 2), epoch=0, step=2)  # pruning step 1 deleted the victim
    assert victim.read_text() == "a researcher's file"


def test_a_manifest_entry_of_the_wrong_shape_is_corrupt_naming_the_field(tmp_path: Path) -> None:
    manager, path = _saved(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["checkpoints"][0]["step"] = "three"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match=rf"entry 0 \('{path.name}'\): step: expected int, "
                                                     r"received 'three'"):
        CheckpointManager(tmp_path)
