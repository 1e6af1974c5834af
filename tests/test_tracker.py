"""The tracker core against real components: TensorBoard files, a W&B offline run, the SQLite store."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _readers import scalars, tensorboard_accumulator
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track._foreign_names import FOREIGN_NAMES
from opusclip_track.backends import REGISTRY, Backend
from opusclip_track.backends.wandb import STEP_KEY

REPO = Path(__file__).resolve().parents[1]


def make(runs_dir: Path, **overrides: object) -> AdvancedExperimentTracker:
    options: dict[str, object] = {"experiment_name": "t", "log_dir": str(runs_dir), "use_wandb": False}
    options.update(overrides)
    return AdvancedExperimentTracker(TrackingConfig(**options))  # type: ignore[arg-type]


# ---- values and steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_every_value_and_step_reaches_the_backend_and_the_store(runs_dir: Path, backend: str) -> None:
    tracker = make(runs_dir, use_tensorboard=backend == "tensorboard", use_wandb=backend == "wandb",
                   wandb_mode="offline")
    expected: dict[str, list[tuple[int, float]]] = {"train/loss": [], "train/lr": [], "val/psnr": []}
    with tracker:
        for step in range(0, 50, 5):
            loss = 1.0 / (step + 1)
            tracker.log_metrics({"train/loss": torch.tensor(loss), "train/lr": np.float32(0.5)}, step=step)
            expected["train/loss"].append((step, loss))
            expected["train/lr"].append((step, 0.5))
            if step % 10 == 0:
                tracker.log_metrics({"val/psnr": 20 + step}, step=step)
                expected["val/psnr"].append((step, 20.0 + step))
    got = scalars(backend, tracker.run_dir)
    store = RunStore(tracker.run_dir)
    for key, series in expected.items():
        assert [s for s, _ in got[key]] == [s for s, _ in series]
        np.testing.assert_allclose([v for _, v in got[key]], [v for _, v in series], rtol=1e-6)
        history = store.history(key)
        assert [s for s, _, _ in history] == [s for s, _ in series]
        np.testing.assert_allclose([v for _, _, v in history], [v for _, v in series], rtol=1e-6)  # float32 tensors


def test_step_auto_increments_and_explicit_steps_are_honoured(runs_dir: Path) -> None:
    with make(runs_dir) as tracker:
        tracker.log_metrics({"a": 1})
        tracker.log_metrics({"a": 2})
        tracker.log_metrics({"a": 3}, step=10)
        tracker.log_metrics({"a": 4})
        tracker.log_metrics({"a": 5}, step=4)  # an explicit earlier step is kept as given
        assert tracker.step == 11
    assert [s for s, _, _ in RunStore(tracker.run_dir).history("a")] == [0, 1, 10, 11, 4]


def test_nan_and_inf_are_recorded_faithfully(runs_dir: Path) -> None:
    with make(runs_dir) as tracker:
        tracker.log_metrics({"x": float("nan"), "y": float("inf"), "z": torch.tensor(float("-inf"))}, step=0)
    store = RunStore(tracker.run_dir)
    assert math.isnan(store.history("x")[0][2])
    assert store.history("y")[0][2] == math.inf and store.history("z")[0][2] == -math.inf
    tb = scalars("tensorboard", tracker.run_dir)
    assert math.isnan(tb["x"][0][1]) and tb["y"][0][1] == math.inf


def test_text_histogram_and_hparams_reach_tensorboard_and_the_store(runs_dir: Path) -> None:
    values = torch.randn(10_000)
    with make(runs_dir) as tracker:
        tracker.log_text("notes", "**bold** prompt", step=2)
        tracker.log_histogram("weights", values, step=3)
        tracker.log_hyperparameters({"lr": 3e-4, "model": {"depth": 4}}, metrics={"hp/best_psnr": 31.5})
    acc = tensorboard_accumulator(tracker.run_dir)
    assert "notes" in acc.Tags()["tensors"]
    assert b"**bold** prompt" in acc.Tensors("notes")[0].tensor_proto.string_val[0]
    histo = acc.Histograms("weights")[0]
    assert histo.step == 3 and histo.histogram_value.num == 10_000
    assert histo.histogram_value.min == pytest.approx(values.min().item())
    # the HParams dashboard's session record sits in the same run directory
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(3e-4)
    assert start.hparams["model/depth"].number_value == 4
    store = RunStore(tracker.run_dir)
    (hp,) = store.events("hparams")
    assert hp["data"]["params"] == {"lr": 3e-4, "model": {"depth": 4}}
    assert store.events("histogram")[0]["data"]["num"] == 10_000
    assert store.history("hp/best_psnr")[0][2] == 31.5


def test_wandb_offline_run_has_name_group_config_and_steps(runs_dir: Path) -> None:
    from _wandb_reader import read_wandb_run

    with make(runs_dir, use_tensorboard=False, use_wandb=True, group="ablation", tags=["a", "b"],
              notes="hello") as tracker:
        tracker.log_metrics({"loss": 1.0}, step=3)
        tracker.log_metrics({"loss": 0.5}, step=7)
    run = read_wandb_run(tracker.run_dir)
    assert [(r[STEP_KEY], r["loss"]) for r in run["history"] if "loss" in r] == [(3, 1.0), (7, 0.5)]
    assert run["run"].display_name == tracker.run_name and run["run"].run_group == "ablation"
    assert list(run["run"].tags) == ["a", "b"] and run["run"].notes == "hello"
    assert run["config"]["experiment_name"] == "t"
    assert (tracker.run_dir / "wandb").is_dir()


# ---- isolation and durability ------------------------------------------------------------------------
class ExplodingBackend(Backend):
    """A backend that raises on every call: the store and TensorBoard must not notice."""

    name = "exploding"

    def start(self) -> None:
        pass

    def log_scalars(self, records: object) -> None:
        raise ConnectionError("backend unreachable")

    def log_hyperparameters(self, record: object) -> None:
        raise ConnectionError("backend unreachable")

    def close(self) -> None:
        raise ConnectionError("backend unreachable")


def test_a_failing_backend_loses_nothing_and_does_not_stop_the_others(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(REGISTRY, "exploding", f"{__name__}:ExplodingBackend")
    with make(runs_dir, backends=["exploding"], flush_interval_s=0.05) as tracker:
        for step in range(200):
            tracker.log_metrics({"loss": step}, step=step)
            if step % 50 == 0:
                tracker.flush()
    assert tracker.backend_errors["exploding"] >= 4 and tracker.backend_errors["tensorboard"] == 0
    assert [v for _, _, v in RunStore(tracker.run_dir).history("loss")] == list(range(200))
    assert [v for _, v in scalars("tensorboard", tracker.run_dir)["loss"]] == list(range(200))
    reports = [r for r in caplog.records if "exploding" in r.getMessage() and "retried" in r.getMessage()]
    assert len(reports) == 1, "a failing backend is reported once, not once per record"


class SlowStartBackend(Backend):
    """A backend that takes seconds to start (like a W&B run reaching its server)."""

    name = "slow"
    started = threading.Event()

    def start(self) -> None:
        time.sleep(3.0)
        SlowStartBackend.started.set()

    def log_scalars(self, records: object) -> None:
        pass

    def log_hyperparameters(self, record: object) -> None:
        pass

    def close(self) -> None:
        pass


class NeverStartsBackend(ExplodingBackend):
    name = "never"

    def start(self) -> None:
        raise ConnectionError("no route to the tracking server")


def test_a_slow_backend_does_not_delay_the_store(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "slow", f"{__name__}:SlowStartBackend")
    with make(runs_dir, backends=["slow"], flush_interval_s=0.1) as tracker:
        tracker.log_metrics({"loss": 1.0}, step=0)
        time.sleep(0.5)  # the first batch is stored; the backend is now starting (3 s)
        tracker.log_metrics({"loss": 2.0}, step=1)
        time.sleep(0.7)  # well past the flush interval, while the slow backend is still starting
        assert not SlowStartBackend.started.is_set()
        stored = [v for _, _, v in RunStore(tracker.run_dir).history("loss")]
        assert stored == [1.0, 2.0], "the store did not wait for the backend"
    assert SlowStartBackend.started.is_set()
    assert [v for _, v in scalars("tensorboard", tracker.run_dir)["loss"]] == [1.0, 2.0]


def test_a_backend_that_cannot_start_is_reported_once_and_the_others_go_on(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(REGISTRY, "never", f"{__name__}:NeverStartsBackend")
    with make(runs_dir, backends=["never"], flush_interval_s=0.05) as tracker:
        for step in range(50):
            tracker.log_metrics({"loss": step}, step=step)
            tracker.flush()
    assert [v for _, _, v in RunStore(tracker.run_dir).history("loss")] == list(range(50))
    assert [v for _, v in scalars("tensorboard", tracker.run_dir)["loss"]] == list(range(50))
    reports = [r for r in caplog.records if "could not start" in r.getMessage()]
    assert len(reports) == 1 and "no route" in reports[0].getMessage()
    assert tracker.backend_errors["never"] == 1, "a failed start is not retried on every batch (back-off)"


def test_a_bad_record_does_not_kill_the_worker(runs_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with make(runs_dir) as tracker:
        tracker.log_metrics({"before": 1.0}, step=0)
        tracker.log_histogram("broken", np.array([1.0, 2.0]), step=0, bins=2)
        # Corrupt a record after it passed the hot-path checks: the worker must skip it and go on.
        from opusclip_track.records import Histogram

        tracker._put(Histogram("broken2", object(), 0, 0.0), 10)
        tracker.log_metrics({"after": 2.0}, step=1)
    store = RunStore(tracker.run_dir)
    assert store.history("before") and store.history("after")
    assert [e["name"] for e in store.events("histogram")] == ["broken"]
    assert any("could not be converted" in r.getMessage() for r in caplog.records)


def logging_script(path: Path, runs_dir: Path, *, steps: int, flush_interval_s: float, then: str) -> Path:
    """A script that logs `loss` (and `lr`) for `steps` steps, prints its run dir, then runs `then`."""
    path.write_text(textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from opusclip_track import AdvancedExperimentTracker, TrackingConfig
        tracker = AdvancedExperimentTracker(TrackingConfig(experiment_name={path.stem!r}, log_dir={str(runs_dir)!r},
                                                           use_wandb=False, flush_interval_s={flush_interval_s}))
        for step in range({steps}):
            tracker.log_metrics({{"loss": step, "lr": 0.1}}, step=step)
        print(tracker.run_dir, flush=True)
    """) + textwrap.dedent(then))
    return path


def test_sigkill_after_the_flush_interval_loses_nothing(runs_dir: Path, tmp_path: Path) -> None:
    script = logging_script(tmp_path / "killed.py", runs_dir, steps=1000, flush_interval_s=0.2, then="""
        time.sleep(1.0)  # well past the flush interval
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    store = RunStore(Path(proc.stdout.strip()))
    assert [v for _, _, v in store.history("loss")] == list(range(1000))
    assert len(store.history("lr")) == 1000


def test_a_script_that_forgets_close_loses_nothing(runs_dir: Path, tmp_path: Path) -> None:
    script = logging_script(tmp_path / "no_close.py", runs_dir, steps=300, flush_interval_s=30,
                            then="# no close(): the atexit hook closes the tracker\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip())
    store = RunStore(run_dir)
    assert len(store.history("loss")) == 300 and store.meta()["status"] == "finished"
    assert len(scalars("tensorboard", run_dir)["loss"]) == 300


def test_sigterm_closes_the_tracker(runs_dir: Path, tmp_path: Path) -> None:
    script = logging_script(tmp_path / "terminated.py", runs_dir, steps=100, flush_interval_s=30,
                            then="time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_dir = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    store = RunStore(run_dir)
    assert len(store.history("loss")) == 100  # the 30 s flush interval never elapsed: close() wrote them
    assert store.meta()["status"] == "failed" and store.meta()["error"].startswith("SIGTERM")
    assert len(scalars("tensorboard", run_dir)["loss"]) == 100


def test_many_threads_logging_at_once_lose_nothing(runs_dir: Path) -> None:
    n_threads, n_calls = 8, 500
    with make(runs_dir, flush_interval_s=0.01) as tracker:
        def work(i: int) -> None:
            for j in range(n_calls):
                tracker.log_metrics({f"thread{i}": j})
                if j % 100 == 0:
                    tracker.flush()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    store = RunStore(tracker.run_dir)
    all_steps = []
    for i in range(n_threads):
        history = store.history(f"thread{i}")
        assert sorted(v for _, _, v in history) == list(range(n_calls))
        all_steps += [s for s, _, _ in history]
    assert sorted(all_steps) == list(range(n_threads * n_calls)), "automatic steps are unique across threads"


def test_backpressure_waits_instead_of_dropping_and_records_the_wait(runs_dir: Path) -> None:
    with make(runs_dir, max_queue_bytes=4096, flush_interval_s=5.0) as tracker:
        for step in range(300):
            tracker.log_metrics({"a": step, "b": step, "c": step}, step=step)
    store = RunStore(tracker.run_dir)
    assert [v for _, _, v in store.history("a")] == list(range(300))
    waits = store.history("tracker/backpressure_wait_s")
    assert waits and waits[-1][2] > 0
    assert store.meta()["backpressure_wait_s"] > 0


def test_resume_continues_the_same_run_without_going_back(runs_dir: Path) -> None:
    with make(runs_dir, experiment_name="res") as first:
        for step in range(5):
            first.log_metrics({"loss": step})
    with make(runs_dir, experiment_name="res", resume=True) as second:
        second.log_metrics({"loss": 99})
    assert second.run_name == first.run_name
    steps = [s for s, _, _ in RunStore(first.run_dir).history("loss")]
    assert steps == [0, 1, 2, 3, 4, 5]
    tb_steps = [s for s, _ in scalars("tensorboard", first.run_dir)["loss"]]
    assert tb_steps == [0, 1, 2, 3, 4, 5]


def test_secrets_never_reach_any_file(runs_dir: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    with make(runs_dir, use_wandb=True, extra={"api_key": secret, "db_url": f"postgresql://u:{secret}@h/db"}) as t:
        t.log_hyperparameters({"lr": 0.1, "hf_token": secret})
        t.log_metrics({"loss": 1.0})
    leaks = [p for p in t.run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []
    assert RunStore(t.run_dir).config()["extra"]["api_key"] == "***REDACTED***"


def test_non_zero_rank_writes_nothing(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with make(runs_dir) as tracker:
        tracker.log_metrics({"loss": 1.0})
        tracker.log_text("t", "x")
        assert tracker.flush()
    assert not runs_dir.exists()
    monkeypatch.setenv("RANK", "0")
    with make(runs_dir) as tracker:
        tracker.log_metrics({"loss": 1.0})
    assert RunStore(tracker.run_dir).history("loss")


# ---- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("metrics", "error", "words"), [
    ({1: 1.0}, TypeError, ["non-empty string", "int"]),
    ({"": 1.0}, ValueError, ["non-empty string"]),
    ({"loss": "0.5"}, TypeError, ["metrics['loss']", "number", "str"]),
    ({"loss": None}, TypeError, ["metrics['loss']", "NoneType"]),
    ({"loss": [1.0]}, TypeError, ["metrics['loss']", "list"]),
    ({"loss": torch.ones(3)}, ValueError, ["metrics['loss']", "one-element", "(3,)"]),
    ({"loss": 1 + 2j}, TypeError, ["metrics['loss']", "complex"]),
    ([("loss", 1.0)], TypeError, ["metrics", "dict", "list"]),
])
def test_bad_metrics_raise_at_the_call(runs_dir: Path, metrics: object, error: type, words: list[str]) -> None:
    with make(runs_dir) as tracker:
        with pytest.raises(error) as info:
            tracker.log_metrics(metrics)  # type: ignore[arg-type]
        for word in words:
            assert word in str(info.value)
        tracker.log_metrics({"ok": 1.0})  # the tracker still works
    assert RunStore(tracker.run_dir).history("ok")


def test_bad_step_text_histogram_and_logging_after_close(runs_dir: Path) -> None:
    tracker = make(runs_dir)
    with pytest.raises(TypeError, match="step: expected an int, received str"):
        tracker.log_metrics({"a": 1}, step="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step: expected >= 0, received -1"):
        tracker.log_metrics({"a": 1}, step=-1)
    with pytest.raises(TypeError, match="text: expected a str, received int"):
        tracker.log_text("n", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="values: expected numbers"):
        tracker.log_histogram("h", ["a", "b"])
    tracker.close()
    with pytest.raises(RuntimeError, match="is closed"):
        tracker.log_metrics({"a": 1})
    tracker.close()  # idempotent


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_cuda_tensors_never_synchronise_on_the_hot_path(runs_dir: Path) -> None:
    with make(runs_dir) as tracker:
        values = [torch.rand((), device="cuda") for _ in range(10)]
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(100):
                tracker.log_metrics({f"m{i}": v for i, v in enumerate(values)}, step=step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    history = RunStore(tracker.run_dir).history("m3")
    assert len(history) == 100 and history[0][2] == pytest.approx(values[3].item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_every_logging_call_takes_cuda_tensors_without_a_sync_and_stores_their_values(runs_dir: Path) -> None:
    # What a training loop on a GPU passes: losses, gradient norms, histograms, clips and frames, all on the device.
    gen = torch.Generator(device="cuda").manual_seed(0)
    clip = torch.rand(8, 3, 32, 32, device="cuda", generator=gen)
    loss, grad_norm, lr = (torch.tensor(v, device="cuda") for v in (0.25, 1.5, 3e-4))
    weights = torch.randn(10_000, device="cuda", generator=gen)
    torch.cuda.synchronize()
    with make(runs_dir) as tracker:
        torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation in these calls raises
        try:
            tracker.log_training_step(loss, grad_norm=grad_norm, learning_rate=lr, step=1)
            tracker.log_metrics({"val/loss": loss * 2}, step=1)
            tracker.log_video_metrics(psnr=loss * 100, step=1)
            tracker.log_histogram("param/w", weights, step=1)
            tracker.log_video(clip, "samples/clip", step=1, reference=clip.flip(0))
            tracker.log_image(clip[0], "samples/frame", step=1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        scores = tracker.evaluate_videos(clip[None], clip.flip(0)[None], step=2)  # the computation asked for
    store = RunStore(tracker.run_dir)
    assert store.history("train/loss")[0][2] == pytest.approx(0.25)
    assert store.history("train/grad_norm")[0][2] == pytest.approx(1.5)
    assert store.history("val/loss")[0][2] == pytest.approx(0.5)
    assert store.history("video/psnr")[0][2] == pytest.approx(25.0)
    assert store.history("video/psnr")[1][2] == pytest.approx(scores["video/psnr"])
    assert store.events("histogram", "param/w")[0]["data"]["num"] == 10_000
    (video,) = store.events("video", "samples/clip")
    assert Path(video["path"]).is_file() and store.events("image", "samples/frame")
    assert tracker.health["ok"], tracker.health


def test_context_manager_and_properties(runs_dir: Path) -> None:
    with make(runs_dir, run_name="my-run") as tracker:
        assert tracker.run_name == "my-run" and tracker.run_dir == runs_dir / "my-run"
        assert tracker.step == -1
        tracker.log_metrics({"a": 1})
        assert tracker.step == 0
    assert os.path.exists(runs_dir / "my-run" / "run.db")
    assert RunStore(runs_dir / "my-run").meta()["status"] == "finished"


@pytest.mark.parametrize(("call", "words"), [
    (lambda t: t.log_metrics({"a": 1.0}, step=2**63), ["step", "2**63 - 1", str(2**63)]),
    (lambda t: t.log_metrics({"a": 1.0}, step=np.uint64(2**63)), ["step", "2**63 - 1"]),
    (lambda t: t.log_metrics({"b\udcff": 1.0}), ["metrics", "UTF-8", "\\udcff"]),
    (lambda t: t.log_metrics({"big": 10**400, "ok": 1.0}), ["metrics['big']", "float64", "401 digits"]),
    (lambda t: t.log_metrics({"known": -(10**309)}), ["metrics['known']", "float64"]),  # a key seen before
    (lambda t: t.log_text("n\udcff", "x"), ["name", "UTF-8"]),
    (lambda t: t.log_text("n", "caf\udce9"), ["text", "UTF-8"]),
    (lambda t: t.log_hyperparameters({"opt": {"na\udcffme": 1}}), ["params", "UTF-8"]),
    (lambda t: t.log_table("t", ["a"], [["x\udcff"]]), ["rows[0]", "UTF-8"]),
    (lambda t: t.log_table("t", ["a\udcff"], [[1]]), ["columns", "UTF-8"]),
    (lambda t: t.log_image(torch.rand(3, 4, 4), "i", caption="\udcff"), ["caption", "UTF-8"]),
    (lambda t: t.update_config({"note": "\udcff"}), ["values['note']", "UTF-8"]),
])
def test_what_can_never_be_stored_raises_at_the_call(runs_dir: Path, call: object, words: list[str]) -> None:
    """Each of these was accepted and then took its whole batch down with it (store and every backend)."""
    with make(runs_dir) as tracker:
        tracker.log_metrics({"known": 1, "ok": 1.0}, step=0)
        with pytest.raises(ValueError) as info:
            call(tracker)  # type: ignore[operator]
        for word in words:
            assert word in str(info.value)
        tracker.log_metrics({"ok": 2.0, "big": 10**300, "café": 3.0}, step=1)  # large ints and UTF-8 are fine
        assert tracker.flush()
    store = RunStore(tracker.run_dir)
    assert [v for _, _, v in store.history("ok")] == [1.0, 2.0]
    assert store.history("big")[0][2] == 1e300 and store.history("café")[0][2] == 3.0
    assert [s for s, _ in scalars("tensorboard", tracker.run_dir)["ok"]] == [0, 1]


def test_histogram_of_nothing_raises_and_all_nan_is_recorded_empty(runs_dir: Path) -> None:
    with make(runs_dir) as tracker:
        for empty in (torch.ones(0), np.zeros((3, 0)), []):
            with pytest.raises(ValueError, match=r"values: expected a non-empty .* received shape \((0,|3, 0)\)"):
                tracker.log_histogram("h", empty)
        tracker.log_histogram("all_nan", torch.full((5,), float("nan")), step=1)
        tracker.log_histogram("some_nan", np.array([1.0, np.nan, 3.0]), step=1, bins=2)
    store = RunStore(tracker.run_dir)
    (nan,) = store.events("histogram", "all_nan")
    assert nan["data"]["edges"] == [] and nan["data"]["counts"] == [] and nan["data"]["num"] == 0
    assert nan["data"]["nonfinite"] == 5 and math.isnan(nan["data"]["min"]), "no invented sample at 0"
    (some,) = store.events("histogram", "some_nan")
    assert some["data"]["counts"] == [1.0, 1.0] and some["data"]["num"] == 2 and some["data"]["nonfinite"] == 1


def test_a_run_that_raises_inside_with_is_recorded_as_failed(runs_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="diverged"), make(runs_dir) as tracker:
        tracker.log_metrics({"loss": 1.0}, step=0)
        raise RuntimeError("loss diverged at step 0")
    meta = RunStore(tracker.run_dir).meta()
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: loss diverged at step 0"
    assert RunStore(tracker.run_dir).history("loss"), "what was logged before the error is kept"
    with make(runs_dir) as clean:
        clean.log_metrics({"loss": 1.0})
    assert RunStore(clean.run_dir).meta()["status"] == "finished" and RunStore(clean.run_dir).meta()["error"] is None
    with pytest.raises(SystemExit), make(runs_dir) as exits:
        sys.exit(0)  # a script that ends itself successfully
    assert RunStore(exits.run_dir).meta()["status"] == "finished"
    explicit = make(runs_dir)
    with pytest.raises(ValueError, match="status: expected one of"):
        explicit.close("crashed")  # type: ignore[arg-type]
    explicit.close("failed")
    assert RunStore(explicit.run_dir).meta()["status"] == "failed"


def test_log_text_redacts_secrets_in_free_text(runs_dir: Path) -> None:
    secrets = ["hunter2", "AA@BB", "sk-0123456789"]
    with make(runs_dir, use_wandb=True) as tracker:
        tracker.log_text("notes", "cache redis://:hunter2@db:6379 and https://bob:AA@BB@host/x", step=0)
        tracker.log_text("cmd", "python train.py api_key=sk-0123456789 lr=0.1", step=0)
    leaks = [(p, s) for p in tracker.run_dir.rglob("*") if p.is_file() for s in secrets if s.encode() in p.read_bytes()]
    assert leaks == []
    texts = {e["name"]: e["data"]["text"] for e in RunStore(tracker.run_dir).events("text")}
    assert "redis://:" in texts["notes"] and "lr=0.1" in texts["cmd"], "the rest of the text is kept"


def test_log_artifact_records_a_file_for_the_backends_and_checks_its_arguments(runs_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "lora.safetensors"
    weights.write_bytes(b"\x01" * 32)
    with make(runs_dir) as tracker:
        tracker.log_artifact(weights, "lora-adapter", type="model", aliases=["best"],
                             metadata={"step": 3, "hf_token": "hf_0123456789"})
        with pytest.raises(FileNotFoundError, match="path: expected an existing file.*a directory"):
            tracker.log_artifact(tmp_path, "folder")
        with pytest.raises(FileNotFoundError, match="path: expected an existing file"):
            tracker.log_artifact(tmp_path / "missing.pt", "missing")
        with pytest.raises(TypeError, match="aliases: expected a sequence of non-empty str"):
            tracker.log_artifact(weights, "x", aliases="best")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name: expected non-empty string"):
            tracker.log_artifact(weights, " ")
    (event,) = RunStore(tracker.run_dir).events("artifact")
    assert event["name"] == "lora-adapter" and event["path"] == str(weights)
    assert event["data"] == {"type": "model", "aliases": ["best"], "step": 3, "hf_token": "***REDACTED***"}


def test_the_package_exports_the_run_status_and_the_lock_error_without_importing_torch(tmp_path: Path) -> None:
    code = ("import sys\nfrom typing import get_args\nfrom opusclip_track import RunLockedError, RunStatus\n"
            "assert get_args(RunStatus) == ('finished', 'failed') and issubclass(RunLockedError, RuntimeError)\n"
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", sorted(FOREIGN_NAMES))
def test_another_tools_method_name_says_which_call_to_use_here(runs_dir: Path, name: str) -> None:
    # tracker.log(...) (W&B), tracker.log_params(...) (MLflow), tracker.add_scalar(...) (TensorBoard): not aliases
    # with half the semantics, but an error naming the method to call, which exists.
    suggested = FOREIGN_NAMES[name].split("(")[0]
    with make(runs_dir) as tracker:
        assert callable(getattr(tracker, suggested))
        with pytest.raises(AttributeError, match=rf"has no '{name}': use tracker\.{suggested}\("):
            getattr(tracker, name)
        assert not hasattr(tracker, name)
        with pytest.raises(AttributeError, match="object has no attribute 'lg_metrics'"):
            tracker.lg_metrics  # noqa: B018  (a plain typo keeps Python's own message)


def test_wandb_init_keywords_name_the_setting_to_use_and_a_typo_its_closest_field(runs_dir: Path) -> None:
    expected = (r"unknown field\(s\) \['project', 'name', 'experiment_nme'\] \('project': use project_name "
                r"\(W&B's project\); 'name': use run_name .*'experiment_nme': did you mean 'experiment_name'\?\)")
    with pytest.raises(TypeError, match=expected):
        AdvancedExperimentTracker(project="vgen", name="r1", experiment_nme="e", log_dir=str(runs_dir))
    with pytest.raises(TypeError, match=r"config: expected a TrackingConfig, received dict: use "
                                        r"tracker\.log_hyperparameters\(params\)"):
        AdvancedExperimentTracker({"lr": 3e-4})  # type: ignore[arg-type]
    assert not runs_dir.exists()  # nothing was started
    with AdvancedExperimentTracker(experiment_name="e", project_name="vgen", run_name="r1", log_dir=str(runs_dir),
                                   use_wandb=False) as t:
        assert t.run_name == "r1" and t.config.project_name == "vgen"
