"""Private PostgreSQL and MariaDB servers that a test may stop and restart.

The shared servers must never be restarted: a test that needs a restart starts
its own instance in a temporary directory, on a free port of
``AUTHKIT_TEST_PRIVATE_PORTS`` (``tests/ports.py``), and stops it afterwards::

    with private_server("postgresql") as server:
        storage = SqlStorage(server.url)
        ...
        server.restart()            # a real server restart: every connection dies

Needs the server binaries (``initdb``/``pg_ctl``, ``mariadb-install-db``/``mariadbd``);
without them the test is skipped with a loud reason (failed under
``AUTHKIT_REQUIRE_SERVICES=1``).  PostgreSQL refuses to run as root, so as root it
runs as the ``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.services import REQUIRED


def _missing(what: str) -> None:
    message = f"*** {what} is not installed: this private-server test did NOT run ***"
    if REQUIRED:
        pytest.fail(message + " (AUTHKIT_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a server start-up, not synchronising threads
    raise RuntimeError(f"the server did not listen on {port} within {seconds:g}s")


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        initdb = shutil.which("initdb") or (bindir and f"{bindir[-1]}/initdb")
        if not initdb:
            _missing("PostgreSQL (initdb, pg_ctl)")
        self._bin = Path(str(initdb)).parent
        self._root = root
        self._data = root / "data"
        self._log = root / "server.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chown(root, pwd.getpwnam("postgres").pw_uid, -1)
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self._bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", str(self._log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``mode`` as pg_ctl's: ``fast``, or ``immediate`` (no checkpoint: a crash, recovered from WAL at start)."""
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


class PrivateMariaDB:
    def __init__(self, root: Path) -> None:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        server = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
        if not install or not Path(server).exists():
            _missing("MariaDB (mariadb-install-db, mariadbd)")
        self._server = server
        self._root = root
        self._data = root / "data"
        self._log = root / "server.log"
        self.port = free_port()
        self.url = f"mysql://root@127.0.0.1:{self.port}/test"
        self._process: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [str(install), "--no-defaults", f"--datadir={self._data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=180,
        )

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self._server, "--no-defaults", f"--datadir={self._data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self._root / 'mysqld.sock'}", f"--pid-file={self._root / 'pid'}",
             f"--log-error={self._log}", "--user=root", "--skip-grant-tables", "--innodb-buffer-pool-size=32M",
             "--skip-log-bin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self._process, self._log)
        import pymysql

        connection = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=10)
        try:
            with connection.cursor() as cursor:
                cursor.execute("CREATE DATABASE IF NOT EXISTS test")
        finally:
            connection.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(60)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_server(kind: str) -> Iterator[PrivatePostgres | PrivateMariaDB]:
    """A started private server of ``kind`` ("postgresql" or "mysql"), stopped and deleted at the end."""
    # Not pytest's tmp_path: its parents are private to root, and PostgreSQL runs as postgres.
    root = Path(tempfile.mkdtemp(prefix=f"authkit-{kind}-"))
    try:
        server: PrivatePostgres | PrivateMariaDB
        server = PrivatePostgres(root) if kind == "postgresql" else PrivateMariaDB(root)
        server.start()
        try:
            yield server
        finally:
            try:
                server.stop()
            except (subprocess.SubprocessError, OSError):
                pass  # already down
    finally:
        shutil.rmtree(root, ignore_errors=True)
