"""A throwaway PostgreSQL server for tests: initdb in a temporary directory, served on a loopback port.

Used as a session fixture (`yield from postgres_server()`); skips only when no `initdb` exists on the
machine (CI installs postgresql). As root, the server runs as the `postgres` user, as PostgreSQL requires.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def find_initdb() -> Path | None:
    """The newest `initdb` binary: Debian's /usr/lib/postgresql/<v>/bin first, then PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1])
    on_path = shutil.which("initdb")
    return Path(on_path) if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def postgres_server(database: str = "sweeps") -> Iterator[str]:
    """Start a server, create `database`, yield its URL (`postgresql://postgres@127.0.0.1:PORT/db`), stop it."""
    initdb = find_initdb()
    if initdb is None:
        pytest.skip("PostgreSQL is not installed on this machine (no initdb binary); CI installs postgresql")
    bindir = initdb.parent
    # Not under pytest's tmp_path: its parents are private to root, and the server user must reach it.
    base = Path(tempfile.mkdtemp(prefix="pg-test-"))
    data, sockets, logfile = base / "data", base / "sock", base / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run(_as_server_user(list(args)), check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(logfile), "-w", "start")
        try:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
