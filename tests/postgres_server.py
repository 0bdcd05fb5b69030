"""A throwaway PostgreSQL server for the tests, started from the installed binaries.

The storage layer claims PostgreSQL for production; these fixtures give its
tests a real server on 127.0.0.1 (one per session, stopped at its end even
on failure) and a fresh database per test. Tests are skipped, with the
reason, where the server binaries are not installed.

Use: import ``postgres_server_fixture`` and ``postgres_url_fixture`` into a
test module; its tests then ask for ``postgres_server`` or ``postgres_url``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import LiteralString

import pytest

from bench.pgserver import BIN_GLOB, SUPERUSER, find_bindir, free_port

# Every wait on the server is bounded: a stuck start must fail the session, not hang CI.
START_TIMEOUT = 30
COMMAND_TIMEOUT = START_TIMEOUT + 30
SETTINGS = (
    # A test cluster needs no durability; without it CREATE DATABASE and commits are cheap.
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    # Never UTC (as a French server's may well be): a timestamp stored or read
    # without its zone then shows, instead of passing by luck.
    "timezone=Europe/Paris",
)


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    run_as: str | None  # postgres refuses to run as root: a system user then runs it
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: LiteralString, database: str) -> None:
        import psycopg
        from psycopg import sql

        # CREATE/DROP DATABASE cannot run inside a transaction block.
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=10,
            autocommit=True,
        ) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(database)))

    def create_database(self) -> str:
        name = f"palais_test_{next(self._names)}"
        self._admin("CREATE DATABASE {}", name)
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed half-way may leave connections behind.
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def command(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"


def _service_user() -> str | None:
    """Who runs the server: ourselves, or the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and no 'postgres' user to run the PostgreSQL server as")
    if shutil.which("runuser") is None:
        pytest.skip("running as root and no runuser to start PostgreSQL as 'postgres'")
    return "postgres"


def _make_root(run_as: str | None) -> Path:
    # Not under pytest's tmp_path: its directories are private to us (0700)
    # and the server's user must be able to reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="palais-pg-"))
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


def _initdb(server: PostgresServer) -> None:
    done = server.command(
        "initdb",
        "-D",
        str(server.datadir),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    )
    if done.returncode != 0:
        pytest.fail(f"initdb failed:\n{done.stdout}\n{done.stderr}", pytrace=False)


def _start(server: PostgresServer) -> bool:
    options = [
        "-c listen_addresses=127.0.0.1",
        f"-p {server.port}",
        f"-k {server.root}",  # the unix socket stays in our directory, not /var/run
        *(f"-c {s}" for s in SETTINGS),
    ]
    done = server.command(
        "pg_ctl",
        "start",
        "-D",
        str(server.datadir),
        "-l",
        str(server.logfile),
        "-w",
        "-t",
        str(START_TIMEOUT),
        "-o",
        " ".join(options),
    )
    return done.returncode == 0


def _stop(server: PostgresServer) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = server.command(
            "pg_ctl",
            "stop",
            "-D",
            str(server.datadir),
            "-m",
            "immediate",
            "-w",
            "-t",
            str(START_TIMEOUT),
        )
        if done.returncode == 0:
            return
    # pg_ctl could not stop it (or timed out): kill the postmaster ourselves.
    pidfile = server.datadir / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, on a free port of 127.0.0.1."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            f"PostgreSQL server binaries not found (/{BIN_GLOB}/initdb):"
            " install the Debian package 'postgresql'"
        )
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed (dev extra)")
    run_as = _service_user()
    root = _make_root(run_as)
    server = PostgresServer(bindir, root, free_port(), run_as)
    try:
        _initdb(server)
        try:
            # The free port may be taken between choosing and binding it: try a few.
            for _ in range(3):
                if _start(server):
                    break
                server.port = free_port()
            else:
                pytest.fail(f"PostgreSQL did not start:\n{server.log_tail()}", pytrace=False)
            yield server
        finally:
            _stop(server)  # also after a start that timed out half-way
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="postgres_url")
def postgres_url_fixture(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
