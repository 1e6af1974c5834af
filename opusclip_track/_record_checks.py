"""Call-time checks of what a record may hold: what the store and every backend can take, checked where the
caller can still fix it (a clear exception naming the argument), never on the worker where one bad record
would take its batch down.

Steps are signed 64-bit ints, text must encode as UTF-8 (SQLite, protobuf and W&B need it), a number must
have a float64. `ScalarChecker.check` is on the hot path: its common case runs in C (see the comments).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ._checks import argument_error, is_number

# Types accepted as metric values without further checks (the common case on the hot path).
PLAIN_NUMBERS = frozenset({float, int, bool, np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
                           np.int8, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_})
MAX_STEP = 2**63 - 1  # steps are signed 64-bit in SQLite, TensorBoard's Event and W&B
MAX_INT_VALUE = int(np.finfo(np.float64).max)  # a Python int beyond this has no float64: it can never be stored


def check_key(key: Any, argument: str) -> None:
    """A name (metric key, tag): a non-empty string that encodes as UTF-8."""
    if not isinstance(key, str) or not key.strip():
        raise (TypeError if not isinstance(key, str) else ValueError)(
            f"{argument}: expected non-empty string keys, received {type(key).__name__} {key!r}")
    check_utf8(key, argument)


def check_utf8(text: str, argument: str) -> None:
    """Text must encode as UTF-8 (SQLite, protobuf and W&B need it): a lone surrogate such as the
    `"\\udcff"` that `os.fsdecode` makes of an undecodable byte cannot be stored anywhere."""
    if not isinstance(text, str):
        raise TypeError(f"{argument}: expected a str, received {type(text).__name__}")
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{argument}: expected text that encodes as UTF-8, received {text!r} with the lone "
                         f"surrogate {text[exc.start]!r} at index {exc.start}") from None


def check_utf8_tree(value: Any, argument: str) -> None:
    """`check_utf8` on every string key and value of nested dicts/lists (hyperparameters, config)."""
    if isinstance(value, str):
        check_utf8(value, argument)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                check_utf8(key, f"{argument} key")
            check_utf8_tree(item, f"{argument}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_utf8_tree(item, f"{argument}[{i}]")


def check_step(step: Any) -> int:
    """A step as an int in [0, 2**63 - 1] (NumPy integers accepted, bools not)."""
    if type(step) is not int:
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
            raise TypeError(f"step: expected an int, received {type(step).__name__} {step!r}")
        step = int(step)
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"step: expected >= 0, received {step}" if step < 0 else
                         f"step: expected <= 2**63 - 1 (a signed 64-bit int, as SQLite, TensorBoard and W&B store "
                         f"steps), received {step}")
    return step


class ScalarChecker:
    """Checks `log_metrics` input; remembers the keys it validated, so a loop's keys are checked once."""

    def __init__(self) -> None:
        self.known_keys: set[str] = set()

    def check(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `metrics` the worker can resolve: plain numbers as given, a CPU tensor read now, a device
        tensor cloned on its device (no sync). Raises TypeError/ValueError naming the key at fault."""
        # `type(...) is dict` first: the ABC isinstance check costs ~5 us when the caches are cold (measured
        # after a 2 ms sleep), more than the rest of the hot path.
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics: expected a dict of name -> number, received {type(metrics).__name__}")
        values = dict(metrics)  # the caller may reuse its dict
        # Fast path, all in C: every key already validated once and every value a plain number (a Python int
        # only when it fits a float64: one more set lookup, and a scan of the ints when there are any).
        types = set(map(type, values.values()))
        if values.keys() <= self.known_keys and types <= PLAIN_NUMBERS and (int not in types or _ints_fit(values)):
            return values
        for key, value in values.items():
            if key not in self.known_keys:
                check_key(key, "metrics")
                self.known_keys.add(key)
            if type(value) is int and not -MAX_INT_VALUE <= value <= MAX_INT_VALUE:
                raise ValueError(f"metrics[{key!r}]: expected a number within float64 range (|x| <= 1.8e308), "
                                 f"received an int of {len(str(abs(value)))} digits")
            if type(value) in PLAIN_NUMBERS:
                continue
            if isinstance(value, torch.Tensor):
                values[key] = _scalar_tensor(key, value)
            elif isinstance(value, (np.number, np.bool_)) and not np.iscomplexobj(value):
                continue
            else:
                raise TypeError(f"metrics[{key!r}]: expected a number, bool or one-element tensor, "
                                f"received {type(value).__name__}")
        return values


def _ints_fit(values: dict[str, Any]) -> bool:
    """True when every Python int among `values` (all plain numbers) has a float64 (|x| <= 1.8e308).

    `float()` over all values in one C loop: it raises OverflowError for such an int only (NaN and inf are
    floats already). Measured 2.7x faster than a Python-level scan of the ints for 10 values.
    """
    try:
        _consume(map(float, values.values()))
    except OverflowError:
        return False
    return True


# Runs an iterator to its end in C, keeping nothing.
_consume: Callable[[Iterable[Any]], None] = collections.deque(maxlen=0).extend


def _scalar_tensor(key: str, value: torch.Tensor) -> Any:
    if value.numel() != 1:
        raise ValueError(f"metrics[{key!r}]: expected a one-element tensor, received shape "
                         f"{tuple(value.shape)}; log a reduction (.mean()) or use log_histogram")
    if value.is_complex():
        raise TypeError(f"metrics[{key!r}]: expected a real tensor, received dtype {value.dtype}")
    if value.device.type == "cpu":
        # Reading a CPU tensor is a memory read, not a device sync; reading it now also captures the value
        # before any later in-place update by the caller.
        return value.item()
    # On an accelerator: detach and clone on its own device (an async kernel, no sync); the worker reads
    # all of a batch's device values in one transfer.
    return value.detach().clone()


def histogram_values(values: Any) -> tuple[Any, int]:
    """`log_histogram` input as `(data, nbytes)`: a tensor cloned on its own device (no sync, safe from later
    in-place edits), anything else as a NumPy array of numbers. Empty input raises ValueError."""
    if isinstance(values, torch.Tensor):
        if values.numel() == 0:  # shape metadata: no device sync
            raise ValueError(f"values: expected a non-empty tensor, received shape {tuple(values.shape)}")
        data = values.detach().clone()
        return data, data.numel() * data.element_size()
    array = np.array(values)
    if array.size == 0:
        raise ValueError(f"values: expected a non-empty array or sequence, received shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"values: expected numbers, received an array of dtype {array.dtype}")
    return array, int(array.nbytes)


def check_fps(fps: Any) -> float:
    """A clip's playback rate: a number in (0, 1000)."""
    if not is_number(fps) or not 0 < fps < 1000:
        raise argument_error("fps", "a number in (0, 1000)", fps)
    return float(fps)


def table_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """`log_table` input as plain rows, one value per column, text encodable as UTF-8.

    Cells are numbers, strings, bools, None, or one-element tensors and NumPy scalars: a CPU tensor is read now
    (later in-place edits must not change it), a device tensor is cloned on its device (read on the worker: no
    sync here), a NumPy scalar is its number.
    """
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise TypeError(f"columns: expected a sequence of str, received {columns!r}")
    for c in columns:
        check_utf8(c, "columns")
    table = [[_table_cell(v) for v in row] for row in rows]
    for i, row in enumerate(table):
        if len(row) != len(columns):
            raise ValueError(f"rows[{i}]: expected {len(columns)} values (one per column), received {len(row)}")
        for value in row:
            if isinstance(value, str):
                check_utf8(value, f"rows[{i}]")
    return table


def _table_cell(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.tolist() if value.device.type == "cpu" else value.clone()
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_artifact(name: Any, type: Any, aliases: Any, metadata: Any) -> None:
    """`log_artifact`'s name, type, aliases and metadata (the file itself is checked by the caller)."""
    check_key(name, "name")
    check_key(type, "type")
    if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
        raise TypeError(f"aliases: expected a sequence of non-empty str, received {aliases!r}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata: expected a dict, received {metadata.__class__.__name__}")  # `type` is shadowed
    check_utf8_tree({"aliases": list(aliases), "metadata": dict(metadata or {})}, "artifact")
