"""System load in the background (`SystemMonitor`) and training throughput (`ThroughputMeter`).

`SystemMonitor` samples CPU, memory, disk, network (psutil) and every visible GPU (NVML through
`nvidia-ml-py`, plus the torch CUDA allocator) on a daemon thread and hands each sample, a flat
`{"sys/...": float}` dict, to a callback such as `tracker.log_metrics`. Units: memory in GiB (2**30
bytes), disk and network rates in MiB/s (2**20 bytes per second), CPU in percent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from opusclip_track._checks import check_int, is_int, is_number

logger = logging.getLogger(__name__)

_GIB = float(1 << 30)
_MIB = float(1 << 20)
# NVML reports memory in bytes and power in milliwatts.
_MW_PER_W = 1000.0
_CPU_COUNT = psutil.cpu_count() or 1


# ---- counters whose rate is taken between two samples -----------------------------------------------
@dataclass(frozen=True)
class _Counters:
    wall_s: float
    cpu_busy_s: float
    cpu_total_s: float
    process_cpu_s: float
    disk_read_bytes: int | None
    disk_write_bytes: int | None
    net_sent_bytes: int | None
    net_recv_bytes: int | None


def _read_counters(process: psutil.Process) -> _Counters:
    # psutil.cpu_percent() keeps its previous reading per calling thread, so a snapshot taken on the
    # caller's thread and one taken on the sampler thread would not share a baseline: we keep our own.
    cpu = psutil.cpu_times()
    total = sum(cpu) - getattr(cpu, "guest", 0.0) - getattr(cpu, "guest_nice", 0.0)  # guest is in user
    busy = total - cpu.idle - getattr(cpu, "iowait", 0.0)
    proc = process.cpu_times()
    disk = psutil.disk_io_counters()
    net = psutil.net_io_counters()
    return _Counters(
        wall_s=time.monotonic(), cpu_busy_s=busy, cpu_total_s=total, process_cpu_s=proc.user + proc.system,
        disk_read_bytes=disk.read_bytes if disk else None,
        disk_write_bytes=disk.write_bytes if disk else None,
        net_sent_bytes=net.bytes_sent if net else None, net_recv_bytes=net.bytes_recv if net else None)


def _rates(prev: _Counters, now: _Counters) -> dict[str, float]:
    wall = max(now.wall_s - prev.wall_s, 1e-6)
    cpu_total = now.cpu_total_s - prev.cpu_total_s
    system_cpu = 100.0 * (now.cpu_busy_s - prev.cpu_busy_s) / cpu_total if cpu_total > 0 else 0.0
    # CPU times tick every 10 ms, so over a very short window the ratio is coarse: keep it in range.
    process_cpu = 100.0 * (now.process_cpu_s - prev.process_cpu_s) / wall
    out = {"sys/cpu_percent": min(max(system_cpu, 0.0), 100.0),
           "sys/process_cpu_percent": min(max(process_cpu, 0.0), 100.0 * _CPU_COUNT)}
    pairs = {"sys/disk_read_mb_s": (prev.disk_read_bytes, now.disk_read_bytes),
             "sys/disk_write_mb_s": (prev.disk_write_bytes, now.disk_write_bytes),
             "sys/net_sent_mb_s": (prev.net_sent_bytes, now.net_sent_bytes),
             "sys/net_recv_mb_s": (prev.net_recv_bytes, now.net_recv_bytes)}
    for key, (before, after) in pairs.items():
        if before is not None and after is not None:
            # A counter can wrap or reset (interface re-created): report 0 rather than a negative rate.
            out[key] = max(after - before, 0) / _MIB / wall
    return out


def _memory(process: psutil.Process) -> dict[str, float]:
    vm = psutil.virtual_memory()
    return {"sys/process_rss_gb": process.memory_info().rss / _GIB,
            "sys/memory_used_percent": float(vm.percent),
            "sys/memory_available_gb": vm.available / _GIB}


# ---- GPUs ---------------------------------------------------------------------------------------------
def _parse_visible_devices(value: str | None) -> list[int | str] | None:
    """`CUDA_VISIBLE_DEVICES` as CUDA reads it: None when unset (all GPUs), else indices or UUIDs.

    CUDA stops at the first entry it cannot parse (so "0,-1,1" means only GPU 0).
    """
    if value is None:
        return None
    devices: list[int | str] = []
    for entry in (e.strip() for e in value.split(",")):
        if entry.isdigit():
            devices.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            devices.append(entry)
        else:
            break
    return devices


class _NvmlProbe:
    """The GPUs this process can see, read through NVML; `open()` says why not when there are none."""

    def __init__(self, device_index: Sequence[int] | None) -> None:
        self._wanted = device_index
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}

    def open(self) -> str | None:
        """Initialise NVML; return the reason GPU metrics are off, or None when some GPU is visible."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # ImportError, or NVMLError when the driver library is missing
            return f"NVML unavailable ({type(exc).__name__}: {exc})"
        self._nvml = pynvml
        try:
            visible = self._visible_handles()
        except pynvml.NVMLError as exc:
            self.close()
            return f"NVML could not list the GPUs ({exc})"
        wanted = range(len(visible)) if self._wanted is None else self._wanted
        self._handles = {i: visible[i] for i in wanted if i < len(visible)}
        if not self._handles:
            self.close()
            env = os.environ.get("CUDA_VISIBLE_DEVICES")
            return f"no GPU visible to this process (CUDA_VISIBLE_DEVICES={env!r})"
        return None

    def _visible_handles(self) -> list[Any]:
        # NVML numbers every GPU in the machine; key metrics by the index this process uses (cuda:i).
        nvml = self._nvml
        visible = _parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
        if visible is None:
            return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        return [nvml.nvmlDeviceGetHandleByIndex(d) if isinstance(d, int)
                else nvml.nvmlDeviceGetHandleByUUID(d) for d in visible]

    def names(self) -> list[str]:
        names = [self._nvml.nvmlDeviceGetName(h) for h in self._handles.values()]
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, handle in self._handles.items():
            out.update(self._read_one(f"sys/gpu{i}", handle))
        return out

    def _read_one(self, prefix: str, handle: Any) -> dict[str, float]:
        nvml = self._nvml
        readers: dict[str, Callable[[], float]] = {
            "utilization": lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "memory_used_gb": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / _GIB,
            "memory_total_gb": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total / _GIB,
            "temperature_c": lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / _MW_PER_W,
        }
        out: dict[str, float] = {}
        for name, read in readers.items():
            try:
                out[f"{prefix}/{name}"] = read()
            except nvml.NVMLError:  # e.g. power or temperature not supported on this board / MIG slice
                continue
        return out

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
        self._nvml = None
        self._handles = {}


def _torch_allocator(device_index: Sequence[int] | None) -> dict[str, float]:
    # Only once the program itself has initialised CUDA: querying earlier would create a CUDA context
    # from the monitor thread (memory on every GPU, and trouble for fork-based data loaders).
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    indices = range(torch.cuda.device_count()) if device_index is None else device_index
    out: dict[str, float] = {}
    for i in indices:
        if i < torch.cuda.device_count():  # allocator statistics: host-side counters, no device sync
            out[f"sys/gpu{i}/torch_allocated_gb"] = torch.cuda.memory_allocated(i) / _GIB
            out[f"sys/gpu{i}/torch_max_allocated_gb"] = torch.cuda.max_memory_allocated(i) / _GIB
            out[f"sys/gpu{i}/torch_reserved_gb"] = torch.cuda.memory_reserved(i) / _GIB
    return out


def _check_device_index(device_index: int | Sequence[int] | None) -> tuple[int, ...] | None:
    if device_index is None:
        return None
    indices = (device_index,) if isinstance(device_index, int) else tuple(device_index)
    if not all(is_int(i) and i >= 0 for i in indices):
        raise ValueError("SystemMonitor.device_index: expected None, a GPU index >= 0 or a sequence of them, "
                         f"received {device_index!r}")
    return indices


# ---- the monitor ----------------------------------------------------------------------------------------
class SystemMonitor:
    """Samples system load every `interval_s` seconds on a daemon thread and passes it to `emit`.

    Each sample is a flat dict of floats: `sys/cpu_percent` (whole machine, 0-100),
    `sys/process_cpu_percent` (this process, up to 100 x cores), `sys/process_rss_gb`,
    `sys/memory_used_percent`, `sys/memory_available_gb`, `sys/disk_read_mb_s`, `sys/disk_write_mb_s`,
    `sys/net_sent_mb_s`, `sys/net_recv_mb_s` (rates since the previous sample), and per visible GPU `i`
    (numbered as `cuda:i`): `sys/gpu{i}/utilization`, `memory_used_gb`, `memory_total_gb`,
    `temperature_c`, `power_w` (NVML) and, once the program uses CUDA, `torch_allocated_gb`,
    `torch_max_allocated_gb`, `torch_reserved_gb`. Without NVML or a GPU the GPU keys are absent and one
    INFO line says why. An `emit` that raises is logged once and the sampling goes on.

    Args:
        emit: Called with each sample on the sampler thread (keep it quick: `tracker.log_metrics` is).
        interval_s: Seconds between samples (> 0).
        device_index: GPU index or indices to report (as `cuda:i`); None reports every visible GPU.

    Example:
        >>> monitor = SystemMonitor(tracker.log_metrics, interval_s=10.0).start()  # doctest: +SKIP
        >>> monitor.sample()["sys/process_rss_gb"] > 0  # doctest: +SKIP
        True
        >>> monitor.stop()  # doctest: +SKIP
    """

    def __init__(self, emit: Callable[[dict[str, float]], Any], interval_s: float = 10.0, *,
                 device_index: int | Sequence[int] | None = None) -> None:
        if not callable(emit):
            raise TypeError(f"SystemMonitor.emit: expected a callable, received {type(emit).__name__}")
        if not is_number(interval_s) or not interval_s > 0:
            raise ValueError("SystemMonitor.interval_s: expected a number of seconds > 0, "
                             f"received {interval_s!r}")
        self._emit = emit
        self._interval_s = float(interval_s)
        self._device_index = _check_device_index(device_index)
        self._process = psutil.Process()
        self._lock = threading.Lock()  # sample() runs on the sampler thread and on callers' threads
        self._last = _read_counters(self._process)
        self._gpu: _NvmlProbe | None = None
        self._gpu_checked = False
        self._emit_failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SystemMonitor:
        """Start the sampler thread (a no-op when it already runs); returns self."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="opusclip-track-system-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the sampler thread and wait for it (at most `timeout_s`); safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        with self._lock:
            if self._gpu is not None:  # reopened by the next sample(); a failed probe is not retried
                self._gpu.close()
                self._gpu, self._gpu_checked = None, False

    def __enter__(self) -> SystemMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample(self) -> dict[str, float]:
        """Take a snapshot now; rates cover the time since the previous sample (or construction)."""
        with self._lock:
            now = _read_counters(self._process)
            out = _rates(self._last, now)
            self._last = now
            out.update(_memory(self._process))
            out.update(self._gpu_metrics())
        return out

    def _gpu_metrics(self) -> dict[str, float]:
        if not self._gpu_checked:
            self._gpu_checked = True
            probe = _NvmlProbe(self._device_index)
            reason = probe.open()
            if reason is None:
                self._gpu = probe
            else:
                logger.info("SystemMonitor: GPU metrics off: %s", reason)
        out = self._gpu.read() if self._gpu is not None else {}
        out.update(_torch_allocator(self._device_index))
        return out

    def _run(self) -> None:
        # A fixed schedule (not sleep(interval) after the work) keeps samples on the interval; a tick
        # missed because the machine was busy is skipped, not made up in a burst.
        next_at = time.monotonic() + self._interval_s
        while not self._stop.wait(max(next_at - time.monotonic(), 0.0)):
            self._sample_and_emit()
            next_at += self._interval_s
            now = time.monotonic()
            if next_at < now:
                next_at = now + self._interval_s

    def _sample_and_emit(self) -> None:
        try:
            self._emit(self.sample())
        except Exception:
            # Monitoring must never take the run down; one traceback is enough to diagnose it.
            if not self._emit_failed:
                self._emit_failed = True
                logger.exception("SystemMonitor: sampling or emit failed; sampling goes on, "
                                 "further failures are not reported")


def gpu_names() -> list[str]:
    """Names of the GPUs visible to this process (NVML, else torch), [] without any.

    Does not initialise CUDA when NVML can answer.
    """
    probe = _NvmlProbe(None)
    if probe.open() is None:
        try:
            return probe.names()
        finally:
            probe.close()
    if torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


# ---- throughput ------------------------------------------------------------------------------------------
class ThroughputMeter:
    """Samples/s, frames/s and step time over the last `window` training steps.

    Call `update()` once per step, after the step; the first call only starts the clock (or call
    `reset()` before the first step). Cheap: a `perf_counter()` and a deque append per step.

    Args:
        window: Number of most recent steps the rates are averaged over (>= 1).

    Example:
        >>> meter = ThroughputMeter(window=2)
        >>> _ = meter.update(8, num_frames=128, now=0.0)
        >>> meter.update(8, num_frames=128, now=0.5)
        {'perf/samples_per_s': 16.0, 'perf/step_time_s': 0.5, 'perf/frames_per_s': 256.0}
    """

    def __init__(self, window: int = 50) -> None:
        check_int("ThroughputMeter.window", window, minimum=1)
        self._window = window
        # (time, samples, frames) of each step end; the oldest entry is the start of the window.
        self._steps: deque[tuple[float, float, float]] = deque()
        self._samples = 0.0
        self._frames = 0.0
        self._has_frames = False

    def reset(self, now: float | None = None) -> None:
        """Forget the window and start the clock at `now` (default: `time.perf_counter()`)."""
        self._steps.clear()
        self._samples = self._frames = 0.0
        self._has_frames = False
        self._steps.append((time.perf_counter() if now is None else now, 0.0, 0.0))

    def update(self, num_samples: float, num_frames: float | None = None, *,
               now: float | None = None) -> dict[str, float]:
        """Record one finished step of `num_samples` samples (`num_frames` video frames).

        Args:
            num_samples: Samples (e.g. clips) processed in this step, >= 0.
            num_frames: Frames processed in this step (e.g. batch x clip length), or None.
            now: The step's end time in seconds; default `time.perf_counter()` (pass it for tests).

        Returns:
            What `compute()` returns.
        """
        if not is_number(num_samples) or num_samples < 0:
            raise ValueError("ThroughputMeter.update num_samples: expected a number >= 0, "
                             f"received {num_samples!r}")
        if num_frames is not None and (not is_number(num_frames) or num_frames < 0):
            raise ValueError(f"ThroughputMeter.update num_frames: expected None or a number >= 0, "
                             f"received {num_frames!r}")
        frames = 0.0 if num_frames is None else float(num_frames)
        self._has_frames = self._has_frames or num_frames is not None
        if self._steps:  # the very first entry only marks the start of the clock
            self._samples += num_samples
            self._frames += frames
        self._steps.append((time.perf_counter() if now is None else now, float(num_samples), frames))
        if len(self._steps) > self._window + 1:
            self._steps.popleft()
            _, samples, frames = self._steps[0]  # the new oldest entry becomes the start: its work leaves
            self._samples -= samples
            self._frames -= frames
        return self.compute()

    def compute(self) -> dict[str, float]:
        """`perf/samples_per_s`, `perf/step_time_s` and (when frames were given) `perf/frames_per_s`.

        Empty until two updates (or `reset()` and one update) have been made.
        """
        if len(self._steps) < 2:
            return {}
        span = self._steps[-1][0] - self._steps[0][0]
        if span <= 0:
            return {}
        out = {"perf/samples_per_s": self._samples / span, "perf/step_time_s": span / (len(self._steps) - 1)}
        if self._has_frames:
            out["perf/frames_per_s"] = self._frames / span
        return out
