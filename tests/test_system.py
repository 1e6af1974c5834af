"""SystemMonitor and ThroughputMeter on this machine: real psutil readings, real NVML where present."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from _readers import tensorboard_scalars
from opusclip_track import AdvancedExperimentTracker, RunStore, TrackingConfig
from opusclip_track.system import SystemMonitor, ThroughputMeter, _NvmlProbe, _parse_visible_devices

HOST_KEYS = {"sys/cpu_percent", "sys/process_cpu_percent", "sys/process_rss_gb", "sys/memory_used_percent",
             "sys/memory_available_gb"}
RATE_KEYS = {"sys/disk_read_mb_s", "sys/disk_write_mb_s", "sys/net_sent_mb_s", "sys/net_recv_mb_s"}
NCPU = psutil.cpu_count() or 1


class _Collector:
    """An emit callback that keeps every sample (called from the sampler thread)."""

    def __init__(self) -> None:
        self.samples: list[dict[str, float]] = []
        self.lock = threading.Lock()

    def __call__(self, sample: dict[str, float]) -> None:
        with self.lock:
            self.samples.append(sample)


def _nvml_sees_a_gpu() -> bool:
    probe = _NvmlProbe(None)
    reason = probe.open()
    probe.close()
    return reason is None


def _assert_plausible(sample: dict[str, float]) -> None:
    assert HOST_KEYS <= set(sample)
    assert all(isinstance(v, float) for v in sample.values()), sample
    assert 0.0 <= sample["sys/cpu_percent"] <= 100.0
    assert 0.0 <= sample["sys/process_cpu_percent"] <= 100.0 * NCPU
    assert 0.0 < sample["sys/process_rss_gb"] < psutil.virtual_memory().total / 2**30
    assert 0.0 < sample["sys/memory_used_percent"] <= 100.0
    assert sample["sys/memory_available_gb"] > 0.0
    assert all(sample[k] >= 0.0 for k in RATE_KEYS & set(sample))


def test_samples_reach_emit_at_the_configured_interval() -> None:
    collector = _Collector()
    monitor = SystemMonitor(collector, interval_s=0.2).start()
    time.sleep(1.2)
    monitor.stop()
    # About 6 samples; a loaded machine may skip ticks, so only the order of magnitude is checked.
    assert 2 <= len(collector.samples) <= 8, len(collector.samples)
    for sample in collector.samples:
        _assert_plausible(sample)
    if psutil.disk_io_counters() is not None and psutil.net_io_counters() is not None:
        assert RATE_KEYS <= set(collector.samples[-1])


def test_stop_wakes_the_sampler_instead_of_sleeping_out_the_interval() -> None:
    monitor = SystemMonitor(_Collector(), interval_s=3600.0).start()
    assert monitor.running
    monitor.stop(timeout_s=10.0)  # a sleep-based loop would still be asleep after this join times out
    assert not monitor.running
    monitor.stop()  # twice is fine


def test_process_cpu_follows_work_done_between_samples() -> None:
    monitor = SystemMonitor(_Collector(), interval_s=10.0)
    monitor.sample()
    start = time.process_time()
    while time.process_time() - start < 0.2:  # 0.2 s of CPU in this process, however busy the machine
        sum(range(1000))
    sample = monitor.sample()
    assert sample["sys/process_cpu_percent"] > 0.0
    _assert_plausible(sample)


_HIDDEN_GPU_SCRIPT = """
import json, logging, sys, threading, time
from opusclip_track.system import SystemMonitor
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
samples, lock = [], threading.Lock()
def emit(sample):
    with lock:
        samples.append(sample)
monitor = SystemMonitor(emit, interval_s=0.1).start()
time.sleep(0.5)
monitor.sample(); monitor.sample(); monitor.stop()
print(json.dumps([*samples, monitor.sample()]))
"""


def test_without_visible_gpu_the_gpu_keys_are_absent_and_logged_once() -> None:
    # A process started with an empty CUDA_VISIBLE_DEVICES sees no GPU through NVML or torch, so this holds
    # on a GPU machine too (in a fresh process: CUDA reads the variable once, when a process initialises it,
    # and another test may already have done that in this one); on this machine NVML itself is missing.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _HIDDEN_GPU_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    samples = json.loads(done.stdout)
    assert len(samples) >= 3 and HOST_KEYS <= set(samples[-1])
    assert not any("gpu" in key for sample in samples for key in sample)
    gpu_lines = [line for line in done.stderr.splitlines() if "GPU metrics off" in line]
    assert len(gpu_lines) == 1 and gpu_lines[0].startswith("INFO ")


@pytest.mark.skipif(not _nvml_sees_a_gpu(), reason="needs an NVIDIA GPU and driver (NVML)")
def test_gpu_metrics_through_nvml() -> None:
    sample = SystemMonitor(_Collector(), device_index=0).sample()
    assert 0.0 <= sample["sys/gpu0/utilization"] <= 100.0
    assert 0.0 <= sample["sys/gpu0/memory_used_gb"] <= sample["sys/gpu0/memory_total_gb"]
    assert not any(key.startswith("sys/gpu1/") for key in sample)


def test_a_raising_emit_does_not_stop_the_sampler(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken_emit(sample: dict[str, float]) -> None:
        calls.append(sample)
        raise RuntimeError("backend down")

    caplog.set_level(logging.INFO, logger="opusclip_track.system")
    monitor = SystemMonitor(broken_emit, interval_s=0.1).start()
    time.sleep(0.8)
    assert monitor.running
    monitor.stop()
    assert len(calls) >= 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "backend down"


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        SystemMonitor(_Collector(), interval_s=0)
    with pytest.raises(ValueError, match="device_index"):
        SystemMonitor(_Collector(), device_index=-1)
    with pytest.raises(TypeError, match="emit"):
        SystemMonitor("not callable")  # type: ignore[arg-type]


def test_cuda_visible_devices_parsing_follows_cuda() -> None:
    assert _parse_visible_devices(None) is None
    assert _parse_visible_devices("") == []
    assert _parse_visible_devices("2, 3") == [2, 3]
    assert _parse_visible_devices("GPU-8f3a,1") == ["GPU-8f3a", 1]
    assert _parse_visible_devices("0,-1,1") == [0]  # CUDA ignores everything after an invalid entry


# ---- ThroughputMeter --------------------------------------------------------------------------------------
def test_throughput_over_a_sliding_window() -> None:
    meter = ThroughputMeter(window=3)
    assert meter.update(10, now=0.0) == {}  # the first update only starts the clock
    assert meter.update(20, now=1.0) == {"perf/samples_per_s": 20.0, "perf/step_time_s": 1.0}
    meter.update(30, now=2.0)
    meter.update(40, now=3.0)
    # The window holds the last 3 steps: 30, 40 and 50 samples over 3 seconds.
    out = meter.update(50, now=4.0)
    assert out == {"perf/samples_per_s": 40.0, "perf/step_time_s": 1.0}
    # A slow step shows up in the step time and the rate.
    out = meter.update(60, now=7.0)
    assert out["perf/step_time_s"] == pytest.approx(5.0 / 3)
    assert out["perf/samples_per_s"] == pytest.approx((40 + 50 + 60) / 5.0)
    assert meter.compute() == out


def test_frames_per_second_and_reset() -> None:
    meter = ThroughputMeter(window=50)
    meter.reset(now=10.0)  # the clock starts before the first step, so that step counts
    meter.update(4, num_frames=4 * 16, now=10.5)
    out = meter.update(4, num_frames=4 * 16, now=11.0)
    assert out == {"perf/samples_per_s": 8.0, "perf/step_time_s": 0.5, "perf/frames_per_s": 128.0}


def test_throughput_with_the_real_clock_is_positive() -> None:
    meter = ThroughputMeter()
    for _ in range(3):
        out = meter.update(2, num_frames=8)
    assert out["perf/samples_per_s"] > 0 and out["perf/frames_per_s"] == pytest.approx(4 * out["perf/samples_per_s"])


def test_throughput_bad_input() -> None:
    with pytest.raises(ValueError, match="window"):
        ThroughputMeter(window=0)
    with pytest.raises(ValueError, match="num_samples"):
        ThroughputMeter().update(-1)
    with pytest.raises(ValueError, match="num_frames"):
        ThroughputMeter().update(1, num_frames="16")  # type: ignore[arg-type]


# ---- with the real tracker -----------------------------------------------------------------------------------
def test_tracker_monitor_samples_land_in_tensorboard_and_the_store(runs_dir: Path) -> None:
    config = TrackingConfig(experiment_name="sys", log_dir=str(runs_dir), use_wandb=False,
                            system_monitor_interval_s=0.1)
    with AdvancedExperimentTracker(config) as tracker:
        for step in range(6):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
            time.sleep(0.1)
        snapshot = tracker.log_performance_metrics()
    _assert_plausible(snapshot)
    board = tensorboard_scalars(tracker.run_dir)
    store = RunStore(tracker.run_dir)
    # Samples go to the current training step: the monitor never advances the step counter.
    assert [s for s, _ in board["train/loss"]] == list(range(6)) and tracker.step == 5
    for key in HOST_KEYS:
        history = store.history(key)
        assert len(history) >= 3 and all(0 <= s <= 5 for s, _, _ in history)
        assert [v for _, v in board[key]] == pytest.approx([v for _, _, v in history], rel=1e-6)
    rss = snapshot["sys/process_rss_gb"]  # the snapshot is logged too (the sampler may add one after it)
    assert (5, pytest.approx(rss, rel=1e-6)) in [(s, v) for s, _, v in store.history("sys/process_rss_gb")]
    assert all(v > 0 for _, v in board["sys/process_rss_gb"])
