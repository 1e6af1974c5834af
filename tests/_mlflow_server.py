"""A real `mlflow server` for tests: SQLite backend store and proxied artifacts in a temporary directory, served on
a loopback port, started and killed by its process group (the server and the uvicorn worker it spawns).

Used as a module fixture (`yield from mlflow_server()`). `kill()` then `start()` restarts it on the same port with
the same store, as an operator restarting a crashed tracking server would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """One `mlflow server --workers 1` on 127.0.0.1 whose data lives under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> None:
        """Start and wait until `/health` answers (start-up is slow: 5-20 s on a loaded 2-core machine)."""
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts")]
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"mlflow server did not answer within {timeout_s} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server's process group (it was started in its own session, so the group is its PID)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-2000:]


def mlflow_server() -> Iterator[MlflowServer]:
    """Start a server in a fresh temporary directory, yield it, kill it and remove its files."""
    server = MlflowServer(Path(tempfile.mkdtemp(prefix="mlflow-test-")))
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.root, ignore_errors=True)
