"""Host copies of the tensors a caller hands over (clips, images): taken on the caller's thread, read on the worker.

The caller may change or free its tensor right after a `log_*` call returns, so the tracker keeps a copy the
caller cannot reach. On a CUDA device the copy runs asynchronously into pinned memory and the caller's thread
never blocks; the worker waits for it (`HostCopy.wait()`), a whole batch of copies later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# torch's own copy (clone) for dtypes NumPy cannot hold
_NO_NUMPY = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)


@dataclass(frozen=True, slots=True)
class HostCopy:
    """A copy of the caller's tensor or array in host memory, complete once `wait()` returns.

    Attributes:
        value: a CPU tensor or a NumPy array.
        ready: for a copy from a CUDA device, the event recorded after the asynchronous copy; None when the copy
            was complete when it was taken.
    """

    value: torch.Tensor | np.ndarray
    ready: torch.cuda.Event | None = None

    def wait(self) -> torch.Tensor | np.ndarray:
        """The copy, after the device finished writing it (blocks only for an asynchronous device copy)."""
        if self.ready is not None:
            self.ready.synchronize()
        return self.value

    @property
    def nbytes(self) -> int:
        """Its size in memory (what the hand-over queue counts against its bound)."""
        value = self.value
        return int(value.nbytes) if isinstance(value, np.ndarray) else value.numel() * value.element_size()


def host_copy(x: torch.Tensor | np.ndarray) -> HostCopy:
    """A copy of `x` the caller cannot change any more. CPU: a copy now. CUDA: an asynchronous copy into pinned
    memory with an event the worker waits on (the caller's thread does not block). Other devices: a blocking copy.
    """
    if isinstance(x, np.ndarray):
        return HostCopy(x.copy())
    tensor = x.detach()
    if tensor.device.type == "cpu":
        # numpy's single-threaded memcpy: torch's clone() goes through its intra-op pool, which waits for
        # busy cores (measured 18 ms vs 0.4 ms for a 16x3x128x128 clip while the worker encodes).
        if tensor.dtype in _NO_NUMPY:
            return HostCopy(tensor.clone())
        return HostCopy(torch.from_numpy(tensor.numpy().copy()))
    if tensor.device.type == "cuda":
        pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        pinned.copy_(tensor, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return HostCopy(pinned, event)
    return HostCopy(tensor.cpu())
