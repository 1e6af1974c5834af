"""The backend interface: what every destination of records (TensorBoard, W&B, ...) implements.

Each backend runs on a thread of its own (its stage of the run writer, `_backend_stage.BackendStage`) and only
there, from `start()` to `close()`, so it needs no locks, and a backend that stalls delays no other. `__init__`
only stores its arguments; `start()` does the work (creating files, starting a W&B run), so a failure there is
isolated and reported like any other backend error. Hooks a backend does not support are no-ops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..records import (
    Alert,
    Artifact,
    ConfigUpdate,
    Graph,
    Histogram,
    Hyperparameters,
    Media,
    Record,
    Rewind,
    RunStatus,
    Scalars,
    Text,
)

if TYPE_CHECKING:
    from ..config import TrackingConfig


class Backend(ABC):
    """One destination of logged records.

    Args:
        config: the run's configuration (already validated).
        run_dir: `<log_dir>/<run_name>`; the backend keeps its files under it.
        run_config: the redacted configuration dict to show in the backend (config, environment, protocol).
    """

    name: ClassVar[str]
    replay_rewinds: ClassVar[bool] = False
    """Whether `opusclip-track sync` sends this backend `Rewind(0)` before its replay: True for a backend whose files
    in the run directory may already hold what the replay writes again and whose `rewind` hides that (TensorBoard's
    event files). A backend whose `rewind` only records that the run was resumed (MLflow's tag) does not get it."""

    def __init__(self, config: TrackingConfig, run_dir: Path, run_config: dict[str, Any]) -> None:
        self.config = config
        self.run_dir = run_dir
        self.run_config = run_config

    @abstractmethod
    def start(self) -> None:
        """Open files/connections. Called once, on the backend's own thread, before the first write."""

    @abstractmethod
    def log_scalars(self, records: Sequence[Scalars]) -> None:
        """Write resolved scalars (plain floats), in hand-over order."""

    @abstractmethod
    def log_hyperparameters(self, record: Hyperparameters) -> None:
        """Record hyperparameters (and summary metrics, when given; they also arrive as ordinary scalars)."""

    def log_text(self, record: Text) -> None:
        """Write a text entry. Default: not supported, ignored."""

    def log_alert(self, record: Alert) -> None:
        """Show an alert (`tracker.alert`, the alert rules). Default: as a text entry, through `log_text`
        (`record.as_text()`: under `alerts/<title>`, `WARN at step 30: <text>`), so a backend that shows text
        shows alerts, and one that shows neither ignores them."""
        self.log_text(record.as_text())

    def log_histogram(self, record: Histogram) -> None:
        """Write a binned histogram (`record.edges`/`counts` are filled). Default: ignored.

        A histogram of values none of which is finite has no bins: `edges` and `counts` are empty,
        `stats["num"]` is 0 and `stats["nonfinite"]` counts the values (min/max are NaN).
        """

    def log_media(self, record: Media) -> None:
        """Write an encoded clip, image, figure or table. Default: ignored.

        `record.files` holds what was written under `media/`; when a file could not be written,
        `record.error` says why and the bytes in `record.encoded` are all there is.
        """

    def log_graph(self, record: Graph) -> None:
        """Show a model's computation graph. Default: ignored."""

    def log_artifact(self, record: Artifact) -> None:
        """Version a file (checkpoint, table). Default: ignored. The tracker sends the run's best checkpoint
        (the latest without a monitor) at close, whichever backends are on."""

    def update_config(self, values: dict[str, Any]) -> None:
        """Add entries to the run's configuration (already redacted). Default: ignored."""

    def rewind(self, step: int) -> None:
        """A resumed run restarts at `step`: hide what was written at steps >= `step`. Default: ignored."""

    def flush(self) -> None:
        """Make what was written durable/visible. Called after every batch."""

    @abstractmethod
    def close(self, status: RunStatus = "finished") -> None:
        """Flush and release everything. Called once, with how the run ended ("finished" or "failed").

        Returns only when what the backend wrote is durable and complete where its readers look (a W&B run's
        `.wandb` file with its exit record, an MLflow run terminated): `opusclip-track sync` and the tests read
        it right after.
        """

    def write(self, records: Sequence[Record]) -> list[tuple[Record, BaseException]]:
        """`deliver` the records, then `flush`; returns the records that failed, with their errors."""
        failures = self.deliver(records)
        self.flush()
        return failures

    def deliver(self, records: Sequence[Record]) -> list[tuple[Record, BaseException]]:
        """Route a batch to the hooks above; return the records that failed, with their errors.

        Scalars go together (a backend writes them as one group); every other record alone, so one bad
        record (a file that vanished, a value a service rejects) fails alone. A `Rewind` splits the batch: what
        was logged before it is delivered before it, the rest after it. Any exception counts as a failure of its
        records, `SystemExit` and `KeyboardInterrupt` raised inside a hook included: a backend never stops the
        thread that calls it.
        """
        cut = next((i for i, r in enumerate(records) if isinstance(r, Rewind)), None)
        if cut is not None:
            return self.deliver(records[:cut]) + self._deliver_group(records[cut:cut + 1]) + \
                self.deliver(records[cut + 1:])
        return self._deliver_group(records)

    def _deliver_group(self, records: Sequence[Record]) -> list[tuple[Record, BaseException]]:
        failures: list[tuple[Record, BaseException]] = []
        scalars = [r for r in records if isinstance(r, Scalars)]
        if scalars:
            try:
                self.log_scalars(scalars)
            except BaseException as exc:
                failures += [(r, exc) for r in scalars]
        for record in records:
            if isinstance(record, Scalars):
                continue
            try:
                self._route(record)
            except BaseException as exc:
                failures.append((record, exc))
        return failures

    def _route(self, record: Record) -> None:
        if isinstance(record, Text):
            self.log_text(record)
        elif isinstance(record, Alert):
            self.log_alert(record)
        elif isinstance(record, Histogram):
            self.log_histogram(record)
        elif isinstance(record, Media):
            self.log_media(record)
        elif isinstance(record, Hyperparameters):
            self.log_hyperparameters(record)
        elif isinstance(record, Artifact):
            self.log_artifact(record)
        elif isinstance(record, ConfigUpdate):
            self.update_config(record.values)
        elif isinstance(record, Graph):
            self.log_graph(record)
        elif isinstance(record, Rewind):
            self.rewind(record.step)


def flatten(params: dict[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """`{"optim": {"lr": 1e-3}}` -> `{"optim/lr": 1e-3}`; backends with flat hyperparameters use it."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out
