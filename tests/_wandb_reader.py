"""Read a W&B offline run back: decode its `.wandb` transaction log into protobuf records.

The framing is read by the product's own reader (`opusclip_track.backends.wandb.transaction_log_payloads`); the
payloads are serialised `wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opusclip_track.backends.wandb import transaction_log_payloads


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    """Media values arrive as nested keys (["samples/video", "_type"]): rebuild the nested dict."""
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def read_wandb_run(run_dir: str | Path, *, finished: bool = True) -> dict[str, Any]:
    """History rows, config and artifacts of the (single) W&B run under `run_dir`, read once, as it is on disk.

    No waiting: the W&B backend's `close()` returns only when the `.wandb` file holds the run's exit record. With
    `finished` (the default) a missing exit record fails the read; `finished=False` reads a run that never
    finished (a killed one) as it is.

    Returns:
        `{"history": [row dict with "_step"], "config": {key: value}, "run": RunRecord, "artifacts": [...],
        "summary": {...}, "files": [paths], "metrics": [MetricRecord (define_metric)], "exit": RunExitRecord
        or None, "environment": [EnvironmentRecord], "alerts": [AlertRecord (run.alert), in order]}`.
    """
    run = _read(Path(run_dir))
    assert not finished or run["exit"] is not None, f"the W&B run under {run_dir} has no exit record"
    return run


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
    alerts: list[Any] = []
    run = exit_record = None
    for payload in transaction_log_payloads(files[0].read_bytes()):
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
        elif kind == "alert":
            alerts.append(record.alert)
    media = sorted(p for p in files[0].parent.joinpath("files").rglob("*") if p.is_file())
    return {"history": history, "config": config, "summary": summary, "run": run, "artifacts": artifacts,
            "files": media, "metrics": metrics, "exit": exit_record, "environment": environment,
            "alerts": alerts}
