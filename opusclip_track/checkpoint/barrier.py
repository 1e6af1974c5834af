"""The checkpoint barrier of a multi-process job (torchrun): rank 0 writes, the other ranks wait for it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from opusclip_track.distributed import RankZeroChannel, next_index

from .errors import CheckpointSaveError
from .manifest import CheckpointInfo


class CheckpointBarrier:
    """What `save` on every rank of a multi-process job needs: rank 0 writes, the other ranks wait until it is done.

    Rank 0 publishes each save's manifest entry (`saved`), and publishes it again when its file is on disk and in
    the manifest (`written`, from the background thread with `async_save`) or its error when the write failed; the
    other ranks wait for these through the job's store (`distributed.RankZeroChannel`: rank 0 never waits for
    them). Saves are numbered per run and per process, so every rank must save as often as rank 0.

    Args:
        run_name: the run whose checkpoints these are.
    """

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name
        opened = next_index(f"checkpoints/{run_name}")  # a run reopened in the same job: its own keys
        self._channel = RankZeroChannel(f"checkpoint/{run_name}/{opened}")
        self._next = 0
        self._last: dict[str, Any] | None = None  # other ranks: the entry of the last save rank 0 published

    def next_save(self) -> int:
        """The number of the save being made (every rank counts its calls)."""
        self._next += 1
        return self._next - 1

    # -- rank 0 ------------------------------------------------------------------------------------------
    def saved(self, index: int, info: CheckpointInfo | None, error: BaseException | None = None) -> None:
        """Rank 0, when `save` returned `info` (or raised `error`): the other ranks' `save` returns."""
        self._channel.publish(f"saved/{index}", json.dumps(
            {"error": repr(error)} if info is None else {"entry": _entry_of(info)}))

    def written(self, info: CheckpointInfo) -> None:
        """Rank 0's `on_saved`: the file is on disk and in the manifest."""
        self._channel.publish(_written_key(info.file, info.time), json.dumps({"entry": _entry_of(info)}))

    def failed(self, info: CheckpointInfo, error: BaseException) -> None:
        """Rank 0's `on_failed`: the background write of `info` failed."""
        self._channel.publish(_written_key(info.file, info.time), json.dumps({"error": repr(error)}))

    # -- the other ranks ---------------------------------------------------------------------------------
    def wait_saved(self, index: int, directory: Path) -> CheckpointInfo | None:
        """Wait until rank 0's save number `index` returned there, and return rank 0's entry (None when there is
        no store to wait through: a launcher other than torchrun without `init_process_group`)."""
        value = self._channel.receive(f"saved/{index}", f"checkpoint {index} of run {self.run_name!r}")
        if value is None:
            return None
        entry = self._entry(value, f"saving checkpoint {index}")
        self._last = entry
        return CheckpointInfo(**entry, path=directory / entry["file"])

    def wait_written(self) -> None:
        """Wait until the last checkpoint rank 0 saved is on disk (at once unless it was saved asynchronously)."""
        if self._last is None:
            return
        file, at = self._last["file"], self._last["time"]
        value = self._channel.receive(_written_key(file, at), f"that checkpoint {file} of run {self.run_name!r} "
                                      "is written")
        if value is not None:
            self._entry(value, f"writing {file}")

    def _entry(self, value: str, what: str) -> dict[str, Any]:
        data = json.loads(value)
        if "error" in data:
            raise CheckpointSaveError(f"run {self.run_name!r}: rank 0 failed {what}: {data['error']}")
        return cast(dict[str, Any], data["entry"])


def _entry_of(info: CheckpointInfo) -> dict[str, Any]:
    return {k: v for k, v in asdict(info).items() if k != "path"}


def _written_key(file: str, at: float) -> str:
    return f"written/{file}@{at!r}"  # a file name is reused once its checkpoint was pruned: the time is not


__all__ = ["CheckpointBarrier"]
