"""Start the real `tensorboard` binary on a loopback port for a logdir, ask it what a person would see, stop it.

The server runs as a user starts it (`tensorboard --logdir DIR`, same loader: the Rust data server where
it is installed), bound to 127.0.0.1 on a port the OS picks, with `--reload_interval 0` (load once: the
test wrote the logdir before). `wait_for_runs` waits until the loader has committed the given runs: the
Rust loader reads all of a run's event files and then commits them at once, so a run that shows tags is
complete.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

_BINARY = Path(sys.executable).with_name("tensorboard")
_LISTENING = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")
_START_TIMEOUT_S = 120.0


class TensorBoardServer:
    """`with TensorBoardServer(logdir) as tb: tb.get("/data/runs")`; the process is stopped by its PID."""

    def __init__(self, logdir: str | os.PathLike[str], *extra_args: str) -> None:
        self.logdir = Path(logdir)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> TensorBoardServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        command = [str(_BINARY), "--logdir", str(self.logdir), "--host", "127.0.0.1", "--port", "0",
                   "--reload_interval", "0", *self.extra_args]
        # stderr carries the "TensorBoard x at http://..." line; start_new_session keeps our signals (and
        # pytest's) away from it, and lets stop() end it and its data-server child by its own PID.
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + _START_TIMEOUT_S
        for line in self.proc.stderr:
            lines.append(line)
            match = _LISTENING.search(line)
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.stop()
            raise RuntimeError("tensorboard did not start:\n" + "".join(lines))
        # Keep draining stderr so a chatty server never blocks on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def wait_for_runs(self, runs: list[str], timeout_s: float = 60.0) -> None:
        """Return once every run in `runs` has been loaded (it lists scalar tags); raise after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            loaded = self.get("/data/plugin/scalars/tags")
            if all(loaded.get(run) for run in runs):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard loaded {sorted(loaded)} of {runs} in {timeout_s} s")
            time.sleep(0.1)

    def raw(self, route: str) -> bytes:
        """GET `route`, as bytes (an image, a graph)."""
        with urllib.request.urlopen(self.url + route, timeout=60) as response:
            data: bytes = response.read()
            return data

    def get(self, route: str) -> Any:
        """GET `route` (e.g. "/data/plugins_listing"), decoded from JSON."""
        return json.loads(self.raw(route))

    def post(self, route: str, body: dict[str, Any]) -> Any:
        """POST a JSON body the way TensorBoard's frontend does (the hparams routes), decoded from JSON."""
        request = urllib.request.Request(self.url + route, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
