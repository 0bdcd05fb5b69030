"""A second IMAP peer: Cyrus IMAP 3.6 (Debian 12's cyrus-imapd), as shipped.

Cyrus conflicts with dovecot-imapd (both provide Debian's imap-server), so
it is not installed: its packages (and those of its libraries the host
lacks) are fetched with ``apt-get download`` and unpacked with ``dpkg -x``
into the work directory, and its ``master`` runs from there with its own
imapd.conf and cyrus.conf, listening on 127.0.0.1 only. Nothing in /etc,
/var or on the standard ports is touched.

    client --imaps(mTLS, tls_client_certs: require, AUTHENTICATE EXTERNAL)--> imapd

The client certificates come from the same kind of per-run CA as the other
peer's; SASL EXTERNAL takes the certificate's commonName as the user, and
the user's INBOX is created at the first login (autocreate_quota: 0). Cyrus
is an IMAP server only here: the SMTP workloads do not run on it.

As shipped, Cyrus does not set TCP_NODELAY on its sockets: a reply written in
several segments waits for the client's delayed ACK (about 40 ms on Linux
loopback), which shows in its figures for multi-segment replies.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import install
from ..pki import BenchPKI
from .base import Endpoint, Identity, Target, TargetUnavailable, free_port_block, wait_for_port

PACKAGES = ("cyrus-common", "cyrus-imapd")
# Libraries Cyrus's imapd and master link against that a host with Postfix
# and Dovecot usually lacks (found with ldd on Debian 12); downloaded only
# if missing.
LIBRARIES = {
    "libical.so.3": "libical3",
    "libpcreposix.so.3": "libpcre3",
    "libxapian.so.30": "libxapian30",
}
DOMAIN = "justice.test"
WORKLOADS = frozenset({"imap"})
NOT_RUN = "n/a: Cyrus IMAP is an IMAP server only (the SMTP workloads run on Postfix + Dovecot)"
NO_NODELAY = "as shipped: no TCP_NODELAY, +40 ms on multi-segment replies"
# Messages per MULTIAPPEND command when filling the large folder.
APPEND_BATCH = 500


def _run(
    cmd: list[str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


class CyrusTarget(Target):
    name = "cyrus"
    workloads = WORKLOADS
    not_run = NOT_RUN

    def __init__(self, workdir: Path, *, log: Callable[[str], None] = print) -> None:
        super().__init__()
        self.dir = workdir
        self.log = log
        self.label = "Cyrus IMAP 3.6"
        self._master: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._version = "unknown"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def bin(self) -> Path:
        return self.root / "usr" / "lib" / "cyrus" / "bin"

    def _env(self) -> dict[str, str]:
        libs = [
            self.root / "usr" / "lib" / "x86_64-linux-gnu",
            self.root / "lib" / "x86_64-linux-gnu",
        ]
        return dict(os.environ, LD_LIBRARY_PATH=":".join(str(p) for p in libs))

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        if os.geteuid() != 0:
            raise TargetUnavailable("Cyrus's master starts as root, then runs as the mail user")
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise TargetUnavailable("apt-get and dpkg are needed to fetch Cyrus's packages")
        try:
            uid, gid = install.ensure_mail_user(self.log)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise TargetUnavailable(str(exc)) from exc
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._unpack()
        self._port = free_port_block(1, start=26000)
        self._make_pki(uid, gid)
        self._write_config(uid, gid)
        self._start_master()
        self.imap = Endpoint("127.0.0.1", self._port)
        self.label = f"Cyrus IMAP {self._version} ({NO_NODELAY})"

    def _unpack(self) -> None:
        debs = self.dir / "debs"
        debs.mkdir(exist_ok=True)
        res = _run(["apt-get", "download", *PACKAGES], cwd=debs)
        if res.returncode != 0:
            raise TargetUnavailable(
                "apt-get download cyrus-imapd failed (no network or no Debian archive?): "
                + (res.stderr.strip() or res.stdout.strip())[-400:]
            )
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(self.root)])
        missing = sorted({pkg for lib, pkg in LIBRARIES.items() if not self._has_library(lib)})
        if missing:
            res = _run(["apt-get", "download", *missing], cwd=debs)
            if res.returncode != 0:
                raise TargetUnavailable(
                    f"apt-get download {' '.join(missing)} failed: {res.stderr.strip()[-400:]}"
                )
            for pkg in missing:
                for deb in debs.glob(f"{pkg}_*.deb"):
                    _run(["dpkg", "-x", str(deb), str(self.root)])
        if not (self.bin / "master").exists():
            raise TargetUnavailable("cyrus-common unpacked without usr/lib/cyrus/bin/master")
        if shutil.which("ldd") is not None:
            ldd = subprocess.run(
                ["ldd", str(self.bin / "imapd")],
                capture_output=True,
                text=True,
                env=self._env(),
                check=False,
            )
            lost = sorted(set(re.findall(r"(\S+) => not found", ldd.stdout)))
            if lost:
                raise TargetUnavailable(f"Cyrus's imapd lacks libraries: {', '.join(lost)}")
        names = sorted(p.name for p in debs.glob("cyrus-imapd_*.deb"))
        m = re.match(r"cyrus-imapd_([^_]+)_", names[0]) if names else None
        self._version = m.group(1).split("-")[0] if m else "3.6"

    def _has_library(self, name: str) -> bool:
        for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"):
            if Path(d, name).exists():
                return True
        return any(self.root.glob(f"**/{name}"))

    def _make_pki(self, uid: int, gid: int) -> None:
        pki = BenchPKI(self.dir / "pki")
        self.server_files = pki.server("localhost")
        self.ca_file = pki.ca_file
        reader = pki.client("greffier1", email=f"greffier1@{DOMAIN}")
        self.reader = Identity("greffier1", f"greffier1@{DOMAIN}", reader.cert, reader.key)
        self.recipient = self.reader.address
        # imapd runs as the mail user and reads its key itself.
        key = self.dir / "conf" / "server.key"
        key.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.server_files.key, key)
        os.chown(key, uid, gid)
        os.chmod(key, 0o600)

    def _write_config(self, uid: int, gid: int) -> None:
        d = self.dir
        for sub in ("conf", "spool", "run", "sieve", "run/proc", "run/lock"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        user = install.MAIL_USER
        imapd = f"""configdirectory: {d}/conf
defaultpartition: default
partition-default: {d}/spool
sievedir: {d}/sieve
cyrus_user: {user}
cyrus_group: {user}
admins: cyrusadmin
unixhierarchysep: yes
altnamespace: no
sasl_mech_list: EXTERNAL
allowplaintext: no
tls_server_cert: {self.server_files.cert}
tls_server_key: {d}/conf/server.key
tls_client_ca_file: {self.ca_file}
tls_client_certs: require
autocreate_quota: 0
idlesocket: {d}/run/idle
notifysocket: {d}/run/notify
lmtpsocket: {d}/run/lmtp
mboxname_lockpath: {d}/run/lock
proc_path: {d}/run/proc
master_pid_file: {d}/run/master.pid
syslog_prefix: cyrus-bench
"""
        (d / "conf" / "imapd.conf").write_text(imapd)
        conf = d / "conf" / "imapd.conf"
        # Commands by absolute path: master looks elsewhere (its build's
        # /usr/lib/cyrus/bin) for relative ones.
        cyrus = f"""START {{
  recover cmd="{self.bin}/ctl_cyrusdb -C {conf} -r"
}}
SERVICES {{
  imaps cmd="{self.bin}/imapd -s -C {conf}" listen="127.0.0.1:{self._port}" prefork=2
}}
EVENTS {{
}}
"""
        (d / "conf" / "cyrus.conf").write_text(cyrus)
        for path in (
            d / "conf",
            d / "spool",
            d / "run",
            d / "sieve",
            d / "run/proc",
            d / "run/lock",
        ):
            os.chown(path, uid, gid)

    def _start_master(self) -> None:
        d = self.dir
        with open(d / "master.log", "ab") as log:
            self._master = subprocess.Popen(
                [
                    str(self.bin / "master"),
                    "-C",
                    str(d / "conf" / "imapd.conf"),
                    "-M",
                    str(d / "conf" / "cyrus.conf"),
                    "-D",
                    "-p",
                    str(d / "run" / "master.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env(),
                start_new_session=True,
            )
        proc = self._master
        try:
            wait_for_port("127.0.0.1", self._port, 30, alive=lambda: proc.poll() is None)
        except TargetUnavailable as exc:
            raise TargetUnavailable(
                f"Cyrus master: {exc} (it logs to syslog; exit code {proc.poll()})"
            ) from exc

    def stop(self) -> None:
        if self._master is not None:
            if self._master.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(self._master.pid, signal.SIGTERM)
                try:
                    self._master.wait(15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        os.killpg(self._master.pid, signal.SIGKILL)
                    self._master.wait(5)
            self._master = None

    # -- descriptions -----------------------------------------------------------
    def versions(self) -> dict[str, str]:
        return {"cyrus": self._version}

    def settings(self) -> dict[str, Any]:
        return {
            "port": self._port,
            "imap_auth": "AUTHENTICATE EXTERNAL (SASL-IR), tls_client_certs: require, "
            "user = certificate commonName",
            "packages": "apt-get download + dpkg -x into the work directory, not installed",
            "as_shipped": NO_NODELAY,
            "workdir": str(self.dir),
        }

    def subject_prefix(self, recipient: str) -> str:
        return ""

    # -- hooks ------------------------------------------------------------------
    def populate(self, mailbox: str, n: int, *, message_factory: Callable[[int], bytes]) -> str:
        """CREATE the folder and fill it with MULTIAPPEND (RFC 3502), in order."""
        assert self.reader is not None and self.imap is not None
        name = f"INBOX/{mailbox}"
        ctx = self.client_context(self.reader)
        with (
            socket.create_connection((self.imap.host, self.imap.port), timeout=600) as raw,
            ctx.wrap_socket(raw, server_hostname=self.server_hostname) as tls,
        ):
            conn = _Blocking(tls)
            conn.line()  # greeting
            conn.command(b"AUTHENTICATE EXTERNAL =")
            conn.command(b'CREATE "' + name.encode() + b'"')
            for start in range(0, n, APPEND_BATCH):
                parts = [b'APPEND "' + name.encode() + b'"']
                for i in range(start, min(n, start + APPEND_BATCH)):
                    data = message_factory(i)
                    flags = b"(\\Seen)" if i % 3 else b"()"
                    parts.append(b" " + flags + b" {%d+}\r\n" % len(data) + data)
                conn.command(b"".join(parts))
            conn.command(b"LOGOUT", expect=(b"OK", b"BYE"))
        return name

    def memory_root_pids(self) -> list[int]:
        return (
            [self._master.pid] if self._master is not None and self._master.poll() is None else []
        )


class _Blocking:
    """Just enough of an IMAP client for populate(): tagged commands, replies read to the tag."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.tag = 0

    def line(self) -> bytes:
        got = self.file.readline()
        if not got:
            raise TargetUnavailable("Cyrus closed the connection while the folder was filled")
        return got

    def command(self, cmd: bytes, expect: tuple[bytes, ...] = (b"OK",)) -> None:
        self.tag += 1
        tag = b"P%d" % self.tag
        self.sock.sendall(tag + b" " + cmd + b"\r\n")
        while True:
            got = self.line()
            if got.startswith(tag + b" "):
                status = got[len(tag) + 1 :].split(b" ", 1)[0].upper()
                if status not in expect:
                    raise TargetUnavailable(f"Cyrus refused {cmd[:30]!r}: {got[:200]!r}")
                return
            if got.startswith(b"* BYE") and b"BYE" in expect:
                continue
