"""Read a W&B offline run back: decode its `.wandb` transaction log into protobuf records.

wandb 0.31 ships no Python reader, but the format is stable and simple: a 7-byte header (`:W&B`, a
uint16 magic, a version byte), then 32 KiB blocks of LevelDB-style log records (4-byte CRC, uint16 length,
1-byte type FULL/FIRST/MIDDLE/LAST), whose payloads are serialised `wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", f"not a W&B transaction log (header {data[:7]!r})"
    out, pos, partial = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - (pos % _BLOCK)
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            partial = chunk
        elif kind == _MIDDLE:
            partial += chunk
        elif kind == _LAST:
            out.append(partial + chunk)
            partial = b""
    return out


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    """Media values arrive as nested keys (["samples/video", "_type"]): rebuild the nested dict."""
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def read_wandb_run(run_dir: str | Path, *, finished: bool = True, timeout_s: float = 30.0) -> dict[str, Any]:
    """History rows, config and artifacts of the (single) offline W&B run under `run_dir`.

    `run.finish()` returns before the W&B service has written the run's `.wandb` file (measured: the file
    still held only its 7-byte header right after `finish()`; it is written when the service closes the
    run's stream, a few ms later). So for a finished run this waits, up to `timeout_s`, until the file ends
    with the run's exit record; `finished=False` reads a run that never finished (a killed one) as it is.

    Returns:
        `{"history": [row dict with "_step"], "config": {key: value}, "run": RunRecord, "artifacts": [...],
        "summary": {...}, "files": [paths], "metrics": [MetricRecord (define_metric)], "exit": RunExitRecord
        or None, "environment": [EnvironmentRecord]}`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            run = _read(Path(run_dir))
        except Exception:  # the service is still writing the file
            if not finished or time.monotonic() > deadline:
                raise
        else:
            if not finished or run["exit"] is not None:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"the W&B run under {run_dir} has no exit record after {timeout_s} s")
        time.sleep(0.05)


def _read(run_dir: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(run_dir.rglob("*.wandb"))
    assert len(files) == 1, f"expected one .wandb file under {run_dir}, found {files}"
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    artifacts: list[Any] = []
    metrics: list[Any] = []
    environment: list[Any] = []
    run = exit_record = None
    for payload in _payloads(files[0].read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, [item.key] if item.key else list(item.nested_key), json.loads(item.value_json))
            history.append(row)
        elif kind == "run":
            run = record.run
            for item in record.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                _set(summary, [item.key] if item.key else list(item.nested_key), json.loads(item.value_json))
        elif kind == "artifact":
            artifacts.append(record.artifact)
        elif kind == "metric":
            metrics.append(record.metric)
        elif kind == "exit":
            exit_record = record.exit
        elif kind == "environment":
            environment.append(record.environment)
    media = sorted(p for p in files[0].parent.joinpath("files").rglob("*") if p.is_file())
    return {"history": history, "config": config, "summary": summary, "run": run, "artifacts": artifacts,
            "files": media, "metrics": metrics, "exit": exit_record, "environment": environment}
