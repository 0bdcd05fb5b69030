"""Palais as a benchmark target.

Contract with the gateway (documented in bench/README.md):

* ``palais init DIR --ports BASE`` creates an instance directory with
  ``DIR/palais.toml`` and ``DIR/demo.json``::

      {"ports": {"smtps": .., "submission": .., "imaps": .., "court": .., "https": ..},
       "ca": "pki/ca.pem",
       "identities": {"avocat1": {"role": "avocat", "address": "..", "cert": "..", "key": ".."},
                      "greffier1": {...}, ...},
       "dossiers": [{"number": "2025-0000138", "address": "..", "service_address": "..", ...}]}

  Relative paths are relative to DIR. ``ca`` must verify the gateway's
  server certificate (and is the bench's trust anchor for it).
* ``palais serve DIR`` runs every listener until SIGTERM.
* Sender: avocat1 (MAIL FROM its address) writing to the first dossier's
  address over implicit-TLS SMTP (``smtps``), Subject starting with
  ``[number] ``. Reader: greffier1, INBOX, over IMAPS with
  ``AUTHENTICATE EXTERNAL =`` after TLS with its client certificate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import procs
from .base import Endpoint, Identity, Target, TargetUnavailable, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def palais_command() -> list[str] | None:
    """How to run the ``palais`` CLI: the venv script, else ``python -m palais``."""
    script = Path(sys.executable).parent / "palais"
    if script.exists():
        return [str(script)]
    venv_script = REPO / ".venv" / "bin" / "palais"
    if venv_script.exists():
        return [str(venv_script)]
    try:
        if importlib.util.find_spec("palais.__main__") is not None:
            return [sys.executable, "-m", "palais"]
    except (ImportError, ValueError):
        pass
    return None


def create_instance(
    parent: Path,
    log: Callable[[str], None] = print,
    timeout: float = 120,
    *,
    name: str = "palais-instance",
    database: str | None = None,
) -> Path:
    """Run ``palais init DIR --ports BASE [--database URL]`` in ``parent``; return DIR."""
    cmd = palais_command()
    if cmd is None:
        raise TargetUnavailable(
            "no `palais` command (neither .venv/bin/palais nor `python -m palais`)"
        )
    inst = parent / name
    base = port_base_hint()
    full = [*cmd, "init", str(inst), "--ports", str(base)]
    if database is not None:
        full += ["--database", database]
    log(f"  $ {' '.join(full)}")
    try:
        res = subprocess.run(
            full, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetUnavailable(f"`palais init` failed: {exc}") from exc
    if res.returncode != 0:
        raise TargetUnavailable(
            f"`palais init` exited {res.returncode}: {(res.stderr or res.stdout).strip()[-600:]}"
        )
    if not (inst / "demo.json").exists():
        raise TargetUnavailable(f"`palais init` made no {inst / 'demo.json'}")
    with (inst / "palais.toml").open("a", encoding="utf-8") as config:
        config.write(BENCH_CONFIG)
    return inst


# Every benchmark client comes from 127.0.0.1 and the memory workload holds
# 1,000 idle IMAP sessions (plus the SMTP connections of the other workloads):
# the per-address and global caps (64 and 4,096 by default) would refuse them.
BENCH_CONFIG = """
[limits]
max_connections = 20000
max_connections_per_address = 20000
"""


class PalaisTarget(Target):
    name = "palais"

    def __init__(
        self,
        instance_dir: Path,
        *,
        command: list[str] | None = None,
        log: Callable[[str], None] = print,
        start_timeout: float = 60.0,
        workers: int = 1,
    ) -> None:
        super().__init__()
        self.dir = Path(instance_dir)
        # `palais serve --workers N` (N > 1, PostgreSQL only): N processes on the same ports.
        self.workers = workers
        self.command = command or palais_command()
        self.log = log
        self.start_timeout = start_timeout
        # Seconds populate() waited for the substring index (None: not asked, or not ready).
        self.index_wait_s: float | None = None
        self.label = "Palais"
        self._proc: subprocess.Popen[bytes] | None = None
        self._demo: dict[str, Any] = {}
        self._version = "unknown"

    # -- demo.json ----------------------------------------------------------------
    def _path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.dir / p

    def _identity(self, name: str) -> Identity:
        try:
            ident = self._demo["identities"][name]
            return Identity(
                name, ident["address"], self._path(ident["cert"]), self._path(ident["key"])
            )
        except (KeyError, TypeError) as exc:
            raise TargetUnavailable(f"demo.json has no usable identity {name!r} ({exc})") from exc

    def _load_demo(self) -> None:
        demo_file = self.dir / "demo.json"
        try:
            self._demo = json.loads(demo_file.read_text())
        except (OSError, ValueError) as exc:
            raise TargetUnavailable(f"cannot read {demo_file}: {exc}") from exc
        try:
            ports = self._demo["ports"]
            self.smtp = Endpoint("127.0.0.1", int(ports["smtps"]), implicit_tls=True)
            self.imap = Endpoint("127.0.0.1", int(ports["imaps"]))
            self.ca_file = self._path(self._demo["ca"])
            dossiers = self._demo["dossiers"]
            self.recipient = dossiers[0]["address"]
            self.background_recipient = (dossiers[1] if len(dossiers) > 1 else dossiers[0])[
                "address"
            ]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TargetUnavailable(f"demo.json lacks a required field ({exc!r})") from exc
        self.sender = self._identity("avocat1")
        self.reader = self._identity("greffier1")
        self.server_hostname = str(self._demo.get("hostname", "localhost"))
        for f in (
            self.ca_file,
            self.sender.cert,
            self.sender.key,
            self.reader.cert,
            self.reader.key,
        ):
            if not Path(f).exists():
                raise TargetUnavailable(f"file named in demo.json is missing: {f}")

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self.command is None:
            raise TargetUnavailable(
                "no `palais` command (neither .venv/bin/palais nor `python -m palais`)"
            )
        self._load_demo()
        try:
            from palais import __version__ as v

            self._version = str(v)
        except ImportError:
            pass
        self.label = f"Palais {self._version}"
        log_path = self.dir / "bench-serve.log"
        cmd = [*self.command, "serve", str(self.dir)]
        if self.workers != 1:
            cmd += ["--workers", str(self.workers)]
        self.log(f"  $ {' '.join(cmd)}")
        log_start = log_path.stat().st_size if log_path.exists() else 0
        try:
            with open(log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=REPO,
                    start_new_session=True,
                )
        except OSError as exc:
            raise TargetUnavailable(f"cannot run `palais serve`: {exc}") from exc
        proc = self._proc
        assert self.smtp is not None and self.imap is not None
        try:
            deadline = time.monotonic() + self.start_timeout
            for ep in (self.smtp, self.imap):
                wait_for_port(
                    ep.host,
                    ep.port,
                    max(1.0, deadline - time.monotonic()),
                    alive=lambda: proc.poll() is None,
                )
            if self.workers != 1:
                # The first worker listening opens the ports to all; the
                # supervisor says ready once every worker is.
                wait_for_ready(log_path, log_start, deadline, alive=lambda: proc.poll() is None)
        except TargetUnavailable as exc:
            tail = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
            raise TargetUnavailable(
                f"`palais serve` did not come up: {exc}; log tail: {tail.strip()}"
            ) from exc

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:
                proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    proc.kill()
                proc.wait(5)
        self._proc = None

    # -- descriptions --------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        return {"palais": self._version}

    def settings(self) -> dict[str, Any]:
        return {
            "instance": str(self.dir),
            "ports": self._demo.get("ports", {}),
            "smtp": "implicit TLS (smtps), client certificate required",
            "imap_auth": "AUTHENTICATE EXTERNAL =",
            "recipient": self.recipient,
            "background_recipient": self.background_recipient,
            "index_wait_s": self.index_wait_s,
            "workers": self.workers,
        }

    def subject_prefix(self, recipient: str) -> str:
        for d in self._demo.get("dossiers", []):
            if d.get("address") == recipient and d.get("number"):
                return f"[{d['number']}] "
        dossiers = self._demo.get("dossiers") or [{}]
        number = dossiers[0].get("number")
        return f"[{number}] " if number else ""

    # -- hooks ------------------------------------------------------------------------
    def populate(self, mailbox: str, n: int, *, message_factory: Callable[[int], bytes]) -> str:
        """Import n messages into the service's drafts box of the first dossier.

        Goes through palais.storage's bulk import (the operator's migration
        path), committed by the same writer code as SMTP filing. The drafts box
        keeps the reader's INBOX (used by ingest, push and memory) unchanged;
        ``mailbox`` is only a label here.
        """
        from palais.mailbox.boxes import BoxKind, BoxRef
        from palais.storage import open_storage
        from palais.storage.bulk import import_messages

        dossier = self._demo["dossiers"][0]
        storage = open_storage(f"sqlite:///{self.dir / 'palais.db'}", self.dir / "blobs")
        try:
            import_messages(
                storage,
                owner=dossier["service_address"],
                kind=BoxKind.BROUILLONS,
                dossier=dossier["number"],
                messages=(message_factory(i) for i in range(n)),
                sender=self._demo["identities"]["greffier1"]["address"],
            )
        finally:
            storage.close()
        self._wait_indexed()
        return BoxRef(BoxKind.BROUILLONS, dossier["number"]).name

    def _wait_indexed(self, limit: float = 900.0) -> None:
        """Wait until the gateway's indexing process has indexed what was
        imported: a folder of this size has its substring index in service;
        measured meanwhile, SEARCH BODY would read every message still listed
        (and the indexer would take a core from every other figure)."""
        import sqlite3

        started = time.monotonic()
        db = sqlite3.connect(f"file:{self.dir / 'palais.db'}?mode=ro", uri=True, timeout=30)
        try:
            while True:
                (left,) = db.execute("SELECT count(*) FROM text_pending").fetchone()
                waited = time.monotonic() - started
                if not left:
                    self.log(f"  substring index ready after {waited:.0f} s")
                    self.index_wait_s = round(waited, 1)
                    return
                if waited > limit:
                    self.log(
                        f"  substring index: {left} messages still to index after {limit:.0f} s"
                    )
                    self.index_wait_s = None
                    return
                time.sleep(2.0)
        finally:
            db.close()

    def prepare_memory(self) -> None:
        """Restart `palais serve`: the heap a Python process keeps after the earlier
        workloads would otherwise absorb the sessions and understate their cost."""
        self.stop()
        self.start()

    def memory_root_pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None and self._proc.poll() is None else []

    def node_of(self, server_port: int, client_port: int) -> str | None:
        """Which worker holds the server end of our connection from ``client_port``
        (its node id, e.g. ``host-w2``); None when it cannot be told.

        With SO_REUSEPORT the kernel picks the worker: the bench reads
        /proc (the socket's inode, then which worker's descriptors hold it).
        Only the supervisor's direct children are workers."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        if self.workers == 1:
            return "single"
        return procs.connection_holder(proc.pid, server_port, client_port)


READY_LINE = "palais: ready"


def wait_for_ready(
    log_path: Path, offset: int, deadline: float, *, alive: Callable[[], bool]
) -> None:
    """Wait until ``palais serve`` writes its ready line into ``log_path`` past ``offset``."""
    while time.monotonic() < deadline:
        try:
            with open(log_path, "rb") as log:
                log.seek(offset)
                if READY_LINE.encode() in log.read():
                    return
        except OSError:
            pass
        if not alive():
            raise TargetUnavailable("`palais serve` exited before every worker was ready")
        time.sleep(0.1)
    raise TargetUnavailable("`palais serve` workers not all ready in time")


# `palais init --ports BASE` listens on BASE plus these (palais.instance.PORT_OFFSETS).
PORT_OFFSETS = (25, 443, 465, 587, 993)


def port_base_hint() -> int:
    """A base port for ``palais init --ports`` whose five listener ports are free.

    Checking BASE..BASE+9 (as before) said nothing of the ports Palais uses,
    and a fixed first candidate made concurrent runs on one machine pick the
    same ports; the search starts at a random base.
    """
    # Below the kernel's ephemeral ports (32768 up): the load generator's own
    # connections would otherwise be able to take a listener's port.
    first = random.randrange(10000, 31700, 10)
    for base in list(range(first, 31700, 10)) + list(range(10000, first, 10)):
        socks: list[socket.socket] = []
        try:
            for offset in PORT_OFFSETS:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise TargetUnavailable("no free set of Palais ports on 127.0.0.1")
