"""TensorBoard backend: event files in `runs/<run_name>/`, so `tensorboard --logdir=runs` shows every run.

We write event files ourselves instead of going through `torch.utils.tensorboard.SummaryWriter`, for two
measured reasons: `add_scalar` builds one protobuf event per value (we put all scalars of a step in one
event), and TensorBoard's record writer checksums with a pure-Python CRC32C (~25 us per 200-byte event;
`google-crc32c` does it in 0.2 us). The file format is TensorBoard's TFRecord framing, unchanged, and the
summaries (text, histograms, hparams, images) are built with TensorBoard's own protos and helpers.

HParams: TensorBoard's plugin builds the HParams tab from two summaries, and both have traps (read in
`tensorboard/plugins/hparams/backend_context.py` and the loaders). An `_hparams_/experiment` summary fixes
the columns for the whole logdir, and the plugin takes the first one it finds: with several runs (quick-start
runs beside sweep trials) every other run loses its columns. So we write none; the plugin then takes the
hyperparameter columns from every run's `_hparams_/session_start_info` (their union) and the metric columns
from every scalar tag of those runs, each with the run's last value. The loaders keep the first metadata of
a tag and ignore later ones, so a run holds exactly one session summary: the union of all its
`log_hyperparameters` calls, in a small event file of its own that is replaced (atomically) when the union
grows and at close (with the run's status). It is written at the first call, so a run killed before close
still shows its hyperparameters; its name sorts before the run's other event files because TensorBoard's
Python loader reads a run's files in name order and then follows only the last one.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .._text import markdown_table
from ..records import Alert, Graph, Histogram, Hyperparameters, Media, RunStatus, Scalars, Text
from .base import Backend, flatten

_file_counter = itertools.count()
# The run's HParams session summary. Event files are named `events.out.tfevents.<10-digit time>...`, so this
# name sorts first; its temporary twin has no "tfevents" in its name, so no loader ever reads it half-written.
HPARAMS_FILE = "events.out.tfevents.0000000000.hparams"
_HPARAMS_TMP = ".hparams.{pid}.tmp"


def _masked_crc(data: bytes) -> bytes:
    import google_crc32c

    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


class EventFile:
    """An append-only TensorBoard event file (TFRecord framing: length, crc, data, crc)."""

    def __init__(self, directory: str | os.PathLike[str], name: str | None = None) -> None:
        """A new event file in `directory`: named `name` (replacing any file of that name), else unique."""
        from tensorboard.compat.proto.event_pb2 import Event

        unique = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                  f"{os.getpid()}.{next(_file_counter)}")
        self.path = os.path.join(directory, name or unique)
        self._fh: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, event: Any) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._fh.write(header + _masked_crc(header) + data + _masked_crc(data))

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class TensorBoardBackend(Backend):
    """Scalars (several per event), text, histograms, hparams, images, GIF videos, figures and tables."""

    name = "tensorboard"
    replay_rewinds = True  # a replay hides what the run's earlier event files hold, instead of showing it twice

    def start(self) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        self._Event = event_pb2.Event
        self._Summary = summary_pb2.Summary
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = EventFile(self.run_dir)
        # A resumed run keeps the hyperparameters its earlier process recorded.
        self._hparams, self._hparams_start = _read_session_start(self.run_dir / HPARAMS_FILE)
        if self._hparams_start is not None:
            self._write_session(status=None)
        self.log_text(Text("config", _key_value_table(flatten(self.run_config)), 0, time.time()))

    def _event(self, step: int, wall_time: float, values: list[Any]) -> None:
        summary = self._Summary(value=values)
        self._file.write(self._Event(wall_time=wall_time, step=step, summary=summary))

    def log_scalars(self, records: Sequence[Scalars]) -> None:
        for rec in records:
            # Adding to the repeated field in place costs half of building Value objects first (measured).
            event = self._Event(wall_time=rec.wall_time, step=rec.step)
            add = event.summary.value.add
            for key, value in rec.values.items():
                add(tag=key, simple_value=value)
            self._file.write(event)

    def log_text(self, record: Text) -> None:
        """A text entry in the Text tab (Markdown), under its name."""
        from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

        # The text plugin's format, under the exact tag (torch's helper appends "/text_summary").
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(dtype="DT_STRING", string_val=[record.text.encode("utf-8")],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        value = self._Summary.Value(tag=record.name, metadata=metadata, tensor=tensor)
        self._event(record.step, record.wall_time, [value])

    def log_alert(self, record: Alert) -> None:
        """A text entry under `alerts/<title>` (Text tab), its level in bold and its step before its text."""
        self.log_text(Text(record.name, f"**{record.level.upper()}** at step {record.step}: {record.text}",
                           record.step, record.wall_time))

    def log_histogram(self, record: Histogram) -> None:
        from tensorboard.compat.proto.summary_pb2 import HistogramProto

        assert record.edges is not None and record.counts is not None and record.stats is not None
        if record.counts.size == 0:
            # No finite value (empty or all-NaN input): an empty histogram, which TensorBoard itself reads
            # as "no buckets" (data_compat), rather than a bucket at 0 that was never observed.
            proto = HistogramProto(num=0)
        else:
            proto = HistogramProto(min=record.stats["min"], max=record.stats["max"], num=record.stats["num"],
                                   sum=record.stats["sum"], sum_squares=record.stats["sum_squares"],
                                   bucket_limit=record.edges[1:].tolist(), bucket=record.counts.tolist())
        self._event(record.step, record.wall_time, [self._Summary.Value(tag=record.name, histo=proto)])

    def log_hyperparameters(self, record: Hyperparameters) -> None:
        # Metric columns need nothing here: TensorBoard shows every scalar tag of the run, and the
        # tracker logs `record.metrics` as scalars too.
        params = {k: _hparam_value(v) for k, v in flatten(record.params).items()}
        union = {**self._hparams, **params}
        if union != self._hparams or self._hparams_start is None:
            self._hparams = union
            self._hparams_start = self._hparams_start or record.wall_time
            self._write_session(status=None)

    def _write_session(self, status: RunStatus | None) -> None:
        """Replace the run's HParams session file: its start info, and its end info once it has ended."""
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        start = plugin_data_pb2.SessionStartInfo(start_time_secs=self._hparams_start)
        for key, value in self._hparams.items():
            kind = {bool: "bool_value", str: "string_value"}.get(type(value), "number_value")
            setattr(start.hparams[key], kind, value)
        infos = {metadata.SESSION_START_INFO_TAG: plugin_data_pb2.HParamsPluginData(session_start_info=start)}
        if status is not None:
            code = api_pb2.STATUS_SUCCESS if status == "finished" else api_pb2.STATUS_FAILURE
            end = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=time.time())
            infos[metadata.SESSION_END_INFO_TAG] = plugin_data_pb2.HParamsPluginData(session_end_info=end)
        tmp = EventFile(self.run_dir, _HPARAMS_TMP.format(pid=os.getpid()))
        for tag, data in infos.items():
            value = self._Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data),
                                        tensor=metadata.NULL_TENSOR)
            tmp.write(self._Event(wall_time=self._hparams_start, step=0, summary=self._Summary(value=[value])))
        tmp.close()
        os.replace(tmp.path, self.run_dir / HPARAMS_FILE)

    def update_config(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.log_text(Text(f"config/{key}", _key_value_table(flatten(value) if isinstance(value, dict)
                                                               else {key: value}), 0, time.time()))

    def log_graph(self, record: Graph) -> None:
        self._file.write(self._Event(wall_time=record.wall_time, graph_def=record.graph_def))

    def rewind(self, step: int) -> None:
        """TensorBoard's own restart marker, `SessionLog.START` at `step`: its readers drop the events of every tag
        (scalars, text, images, histograms) at steps >= `step` loaded before it, so a resumed run shows no
        duplicated or backwards steps and nothing of the trajectory it abandoned.

        Written twice: the TensorBoard app's loader (`plugin_event_accumulator`) takes the first START of a run
        for the session's start and drops nothing there, and a run's files hold none before its first rewind (the
        older `EventAccumulator` drops at every START, so twice changes nothing for it).
        """
        from tensorboard.compat.proto.event_pb2 import SessionLog

        for _ in range(2):
            self._file.write(self._Event(wall_time=time.time(), step=step,
                                         session_log=SessionLog(status=SessionLog.START)))

    def log_media(self, record: Media) -> None:
        """A table as Markdown text; a clip as an animated GIF and an image or figure as a PNG (Images tab)."""
        if record.kind == "table":
            columns, rows = record.payload
            self.log_text(Text(record.name, markdown_table(columns, rows), record.step, record.wall_time))
            return
        height, width = record.options["height"], record.options["width"]
        if record.kind != "video":
            encoded = record.encoded["png"]
        elif "gif" in record.encoded:
            encoded = record.encoded["gif"]
        else:  # a clip replayed from the store has its MP4 only
            encoded, height, width = _gif_from_mp4(record.files["mp4"], record.options["fps"])
        image = self._Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
        self._event(record.step, record.wall_time, [self._Summary.Value(tag=record.name, image=image)])

    def flush(self) -> None:
        self._file.flush()

    def close(self, status: RunStatus = "finished") -> None:
        """Close the event file; a run that logged hyperparameters ends its HParams session with `status`
        ("finished" shows as success, anything else as failure)."""
        if self._hparams_start is not None:
            self._write_session(status)
        self._file.close()


def _hparam_value(value: Any) -> float | str | bool:
    """A value TensorBoard's HParams tab can show (a number, a string or a bool); anything else as text."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range stays exact as text
            return str(value)
    return str(value)


def _read_session_start(path: Path) -> tuple[dict[str, Any], float | None]:
    """The hyperparameters and start time in a run's HParams session file; `({}, None)` without one."""
    if not path.exists():
        return {}, None
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams import metadata

    for raw in RawEventFileLoader(str(path)).Load():
        for value in Event.FromString(raw).summary.value:
            if value.tag == metadata.SESSION_START_INFO_TAG:
                start = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                params = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
                return params, start.start_time_secs
    return {}, None


def _gif_from_mp4(path: Path, fps: float) -> tuple[bytes, int, int]:
    """The GIF TensorBoard plays, made from a clip's MP4 (H.264 is lossy: close to, not equal to, the GIF the
    run itself would have written), with its height and width."""
    from .. import media

    frames, _ = media.read_video(path)  # (T, 3, H, W) uint8
    array = frames.permute(0, 2, 3, 1).numpy()
    return media.encode_gif(array, fps), int(array.shape[1]), int(array.shape[2])


def _key_value_table(values: dict[str, Any]) -> str:
    """A config as a two-column Markdown table, values exactly as `str` shows them."""
    return markdown_table(["key", "value"], [[key, str(value)] for key, value in sorted(values.items())])
