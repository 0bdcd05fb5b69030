"""A PostgreSQL server of the bench's own, started and stopped in its work directory.

The test suite's fixture (``tests/postgres_server.py``) finds the binaries
and a port with this module's functions; the bench runs without tests/ and
without pytest. Debian's server binaries (``/usr/lib/postgresql/*/bin``, off PATH),
``initdb`` with trust authentication, ``pg_ctl`` on 127.0.0.1 and a free
port, the unix socket in the work directory. Run as root, the server runs
as the ``postgres`` user (postgres refuses uid 0).

Unlike the tests' cluster, this one keeps PostgreSQL's default durability
(fsync, synchronous_commit, full_page_writes on): Palais's SQLite runs with
``synchronous=FULL``, and the ``nodes`` workload compares the two.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from .targets.base import TargetUnavailable

BIN_GLOB = "usr/lib/postgresql/*/bin"
SUPERUSER = "palais"
START_TIMEOUT = 30
COMMAND_TIMEOUT = START_TIMEOUT + 30


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's server binaries."""
    found = [Path(p) for p in sorted(Path("/").glob(BIN_GLOB))]
    usable = [d for d in found if all((d / t).exists() for t in ("initdb", "pg_ctl", "postgres"))]
    if not usable:
        return None
    return max(usable, key=lambda d: version_key(d.parent.name))


def version_key(name: str) -> tuple[int, ...]:
    """``"15"`` -> (15,), ``"9.6"`` -> (9, 6): newest wins when several are installed."""
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def free_port() -> int:
    """A port of 127.0.0.1 free now (it may be taken before it is bound: retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One server with its data, log and socket in ``root``."""

    def __init__(self, root: Path) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise TargetUnavailable(
                f"PostgreSQL server binaries not found (/{BIN_GLOB}/initdb):"
                " install the Debian package 'postgresql'"
            )
        self.bindir = bindir
        self.root = root
        self.port = 0
        self.run_as: str | None = None
        self.started = False
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise TargetUnavailable(
                    "running as root and no 'postgres' user to run PostgreSQL as"
                ) from exc
            if shutil.which("runuser") is None:
                raise TargetUnavailable("running as root and no runuser to start PostgreSQL")
            self.run_as = "postgres"

    @property
    def version(self) -> str:
        return self.bindir.parent.name

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _command(
        self, tool: str, *args: str, as_server: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / tool), *args]
        if as_server and self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetUnavailable(f"PostgreSQL {tool}: {exc}") from exc

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-800:]
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        done = self._command(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        if done.returncode != 0:
            raise TargetUnavailable(f"initdb failed: {(done.stderr or done.stdout)[-600:]}")
        # The free port may be taken between choosing and binding it: try a few.
        for _ in range(3):
            self.port = free_port()
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.root}",  # the unix socket stays here, not in /var/run
            ]
            self.started = True  # from here on, stop() must try (a start may half succeed)
            done = self._command(
                "pg_ctl",
                "start",
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(START_TIMEOUT),
                "-o",
                " ".join(options),
            )
            if done.returncode == 0:
                return
        raise TargetUnavailable(f"PostgreSQL did not start: {self.log_tail()}")

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser (CREATE DATABASE, CHECKPOINT)."""
        done = self._command(
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-c",
            statement,
            as_server=False,
        )
        if done.returncode != 0:
            raise TargetUnavailable(f"psql {statement!r}: {(done.stderr or done.stdout)[-400:]}")

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (killed if pg_ctl cannot); its directory goes with the work dir."""
        if self.started:
            self.started = False
            stopped = False
            with contextlib.suppress(TargetUnavailable):
                done = self._command(
                    "pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30"
                )
                stopped = done.returncode == 0
            if not stopped:
                pidfile = self.datadir / "postmaster.pid"
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int(pidfile.read_text().splitlines()[0]), signal.SIGKILL)
