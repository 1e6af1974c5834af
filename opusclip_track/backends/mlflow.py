"""MLflow backend: one MLflow run per tracked run, in a local SQLite store under the run or on a tracking server.

Where it writes: `TrackingConfig.mlflow_tracking_uri`, else `$MLFLOW_TRACKING_URI`, else a local store under the
run directory (`sqlite:///<run_dir>/mlflow/mlflow.db`, artifacts in `<run_dir>/mlflow/artifacts`), so it works
offline with no server: `mlflow ui --backend-store-uri sqlite:///runs/<run>/mlflow/mlflow.db` shows it.

The experiment is the project name and the MLflow run is found again by the tag `opusclip.run_name`, so a resumed
run (and `opusclip-track sync RUN --to mlflow`) continues the same MLflow run. Scalars go through
`MlflowClient.log_batch` in chunks of MLflow's 1000-metrics-per-request limit, with their true steps and times;
one request per batch, never one per scalar. A request that fails raises: the tracker keeps the records and
retries them with its next batches (the local store has them whatever happens).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import redact_secrets, redact_text
from ..records import Alert, Artifact, Hyperparameters, Media, RunStatus, Scalars, Text
from .base import Backend, flatten

log = logging.getLogger(__name__)

RUN_NAME_TAG = "opusclip.run_name"
ALERT_TAG_PREFIX = "opusclip.alert."  # + an alert's title: the latest alert of that title
CHANGED_PARAM_PREFIX = "param_changed/"  # tag holding the latest value of a param MLflow will not let us change
MAX_METRICS_PER_REQUEST = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH
MAX_PARAMS_PER_REQUEST = 100  # MAX_PARAMS_TAGS_PER_BATCH
MAX_PARAM_LENGTH = 6000  # MAX_PARAM_VAL_LENGTH
MAX_TAG_LENGTH = 8000  # MAX_TAG_VAL_LENGTH
MAX_KEY_LENGTH = 250  # MAX_ENTITY_KEY_LENGTH
# MLflow's HTTP client retries a failed request 7 times with exponential back-off (about 4 minutes) before it
# raises; the tracker retries failed records itself, so a down server should fail fast and be tried again with
# the next batch. Only applied when the user has not set these variables (they are process-wide).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_MEDIA_DIRS = {"video": "clips", "image": "images", "figure": "figures", "table": "tables"}
_BAD_NAME_CHARS = re.compile(r"[^\w/.\- :]")  # what mlflow.utils.validation accepts in metric/param/tag names


def resolve_tracking_uri(configured: str | None, run_dir: Path) -> str:
    """The setting, else `$MLFLOW_TRACKING_URI`, else the local SQLite store under `run_dir`."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(run_dir / 'mlflow' / 'mlflow.db').resolve()}"


def clip_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with a visible marker saying how long it was (MLflow rejects longer)."""
    if len(text) <= limit:
        return text
    marker = f"... [truncated by opusclip-track: {len(text)} chars; the full value is in the run's local store]"
    return text[:limit - len(marker)] + marker


def mlflow_name(key: str) -> str:
    """A metric/param/tag name MLflow accepts: other characters become `_`, no empty, `.` or `..` path parts
    (MLflow refuses names that are not normalised paths), at most 250 characters."""
    parts = [p if p != ".." else "__" for p in _BAD_NAME_CHARS.sub("_", key).split("/") if p not in ("", ".")]
    return "/".join(parts)[:MAX_KEY_LENGTH].rstrip("/") or "_"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class MlflowBackend(Backend):
    """Metrics (batched), params, tags, clips/images/figures/tables and checkpoints as artifacts, run status."""

    name = "mlflow"

    def start(self) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric, Param, RunTag
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError("the MLflow backend needs `pip install opusclip-track[mlflow]`") from exc
        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self.tracking_uri = resolve_tracking_uri(self.config.mlflow_tracking_uri, self.run_dir)
        if self.tracking_uri.startswith(("http://", "https://")):
            for name, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
        elif self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.tracking_uri)
        self._names: dict[str, str] = {}
        self.run_id = self._open_run()
        self._params: dict[str, str] = dict(self.client.get_run(self.run_id).data.params)
        self._log_params(self.run_config)
        log.info("MLflow run %s (%s) at %s", self.config.run_name, self.run_id, redact_text(self.tracking_uri))

    # ---- the run ------------------------------------------------------------------------------------------
    def _open_run(self) -> str:
        """The MLflow run tagged with our run name (a resumed run, a sync), else a new one."""
        experiment_id = self._experiment_id()
        found = self.client.search_runs([experiment_id], f"tags.`{RUN_NAME_TAG}` = '{self.config.run_name}'",
                                        max_results=1)
        if found:
            run_id: str = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(experiment_id, run_name=self.config.run_name, tags=self._run_tags())
        return str(run.info.run_id)

    def _experiment_id(self) -> str:
        name = self.config.project_name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if self.tracking_uri.startswith("sqlite:///"):  # else MLflow would put artifacts under ./mlruns
                location = (self.run_dir / "mlflow" / "artifacts").resolve().as_uri()
            try:
                return str(self.client.create_experiment(name, artifact_location=location))
            except Exception:  # another process created it first
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise RuntimeError(f"project_name: the MLflow experiment {name!r} is deleted; restore it "
                               f"(`mlflow experiments restore`) or choose another project_name")
        return str(experiment.experiment_id)

    def _run_tags(self) -> dict[str, str]:
        cfg = self.config
        git = (self.run_config.get("environment") or {}).get("git") or {}
        command = (self.run_config.get("environment") or {}).get("command") or []
        tags = {RUN_NAME_TAG: cfg.run_name, "opusclip.experiment_name": cfg.experiment_name,
                "opusclip.run_dir": str(self.run_dir.resolve()), "group": cfg.group,
                "tags": ", ".join(cfg.tags) or None,
                # the notes as the run config holds them (redacted), as the W&B backend does
                "mlflow.note.content": self.run_config.get("notes", cfg.notes) or None,
                "mlflow.source.git.commit": git.get("commit"), "mlflow.source.git.branch": git.get("branch"),
                "mlflow.source.name": command[0] if command else None}
        return {k: clip_text(str(v), MAX_TAG_LENGTH) for k, v in tags.items() if v is not None}

    # ---- records ------------------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = mlflow_name(key)
        return name

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        metric, name = self._Metric, self._name
        metrics = [metric(name(key), value, int(rec.wall_time * 1000), rec.step)
                   for rec in records for key, value in rec.values.items()]
        # A chunk that fails raises, and the tracker retries all these records: MLflow's SQL stores ignore a
        # metric identical in key, value, step and time to one they hold, so a retry writes no duplicates.
        for chunk in _chunks(metrics, MAX_METRICS_PER_REQUEST):
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        self._log_params(record.params)  # record.metrics arrive as ordinary scalars too

    def update_config(self, values: dict[str, Any]) -> None:
        self._log_params(values)

    def _log_params(self, params: dict[str, Any]) -> None:
        """Log new params; a changed value goes to the tag `param_changed/<key>` (MLflow params are immutable)."""
        new: dict[str, str] = {}
        changed: dict[str, str] = {}
        for key, value in flatten(params).items():
            name, text = self._name(key), clip_text(str(value), MAX_PARAM_LENGTH)
            if name not in self._params:
                new[name] = text
            elif self._params[name] != text:
                changed[CHANGED_PARAM_PREFIX + name] = clip_text(text, MAX_TAG_LENGTH)
        for chunk in _chunks(list(new.items()), MAX_PARAMS_PER_REQUEST):
            self.client.log_batch(self.run_id, params=[self._Param(k, v) for k, v in chunk], synchronous=True)
            self._params.update(chunk)
        if changed:
            self._set_tags(changed)
            log.info("MLflow keeps a param's first value; the new values of %s are in the tags %s<key> (the "
                     "local store and W&B have every value)", ", ".join(sorted(changed))[:300], CHANGED_PARAM_PREFIX)

    def _set_tags(self, tags: dict[str, str]) -> None:
        for chunk in _chunks(list(tags.items()), MAX_PARAMS_PER_REQUEST):
            self.client.log_batch(self.run_id, tags=[self._RunTag(k, v) for k, v in chunk], synchronous=True)

    def log_text(self, record: Text) -> None:
        """A text artifact `text/<name>_step<step>.txt`."""
        self._log_text_file("text", record.name, record.text, record.step)

    def log_alert(self, record: Alert) -> None:
        """The text as an artifact `alerts/<title>_step<step>.txt`, and the tag `opusclip.alert.<title>` holding the
        latest alert of that title (`WARN at step 30 (<local time>): <text>`)."""
        self._log_text_file("alerts", record.title, record.text, record.step)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.wall_time))
        value = f"{record.level.upper()} at step {record.step} ({when}): {record.text}"
        self._set_tags({self._name(f"{ALERT_TAG_PREFIX}{record.title}"): clip_text(value, MAX_TAG_LENGTH)})

    def _log_text_file(self, folder: str, name: str, text: str, step: int) -> None:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or folder
        self.client.log_text(self.run_id, text, f"{folder}/{stem}_step{step:08d}.txt")

    def log_media(self, record: Media) -> None:
        # The encoder named the file after the record and its step (`samples_step00000100.mp4`).
        path = record.files.get("mp4") or record.files.get("png") or record.files.get("json")
        if path is not None:
            self.client.log_artifact(self.run_id, str(path), _MEDIA_DIRS[record.kind])

    def log_artifact(self, record: Artifact) -> None:
        """The file under `checkpoints/` (type "model") or `<type>/`, its metadata beside it as JSON, and a
        tag per alias (`opusclip.checkpoint.best` -> `checkpoints/ckpt-step00001000.pt`)."""
        folder = "checkpoints" if record.type == "model" else mlflow_name(record.type)
        path = Path(record.path)
        self.client.log_artifact(self.run_id, str(path), folder)
        info = {"name": record.name, "type": record.type, "aliases": record.aliases, "metadata": record.metadata}
        self.client.log_dict(self.run_id, redact_secrets(info), f"{folder}/{path.name}.json")
        label = "checkpoint" if record.type == "model" else folder
        self._set_tags({f"opusclip.{label}.{mlflow_name(alias)}": f"{folder}/{path.name}"
                        for alias in record.aliases or ["latest"]})

    def rewind(self, step: int) -> None:
        # MLflow cannot hide metric points; say where the resumed trajectory restarts.
        self._set_tags({"opusclip.resumed_at_step": str(step)})

    def close(self, status: RunStatus = "finished") -> None:
        """End the MLflow run FINISHED, or FAILED when the tracked run failed."""
        self.client.set_terminated(self.run_id, "FAILED" if status == "failed" else "FINISHED",
                                   end_time=int(time.time() * 1000))
