"""The peer: Postfix (SMTP in) + Dovecot (LMTP delivery to Maildir, IMAP out).

A self-contained instance in a temporary directory, listening on 127.0.0.1
only, on non-standard ports; the system's own Postfix/Dovecot configuration
(/etc/postfix, /etc/dovecot) is never read or changed, and ports 25/143/993
are never used.

    client --smtps(mTLS, cert required)--> Postfix smtpd --queue--> qmgr
           --LMTP (unix socket)--> Dovecot lmtp --> Maildir
    client --imaps(mTLS, AUTHENTICATE EXTERNAL)--> Dovecot imap-login/imap

Written for Dovecot 2.3 (Debian 12 ships 2.3.19); Dovecot 2.4 changed most
setting names and is refused with a clear message rather than misconfigured.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import install
from ..pki import BenchPKI
from .base import Endpoint, Identity, Target, TargetUnavailable, free_port_block, wait_for_port

DOMAIN = "justice.test"
DOSSIER_ADDRESS = f"dossier-2025-0000138@{DOMAIN}"
SUBJECT_PREFIX = "[2025-0000138] "


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _version(cmd: list[str], pattern: str = r"(\S+)") -> str:
    try:
        out = _run(cmd, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    m = re.search(pattern, text)
    return m.group(1) if m else (text or "unknown")


class PeerTarget(Target):
    name = "peer"

    def __init__(
        self,
        workdir: Path,
        *,
        max_sessions: int = 1100,
        allow_install: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.dir = workdir
        self.max_sessions = max(100, max_sessions)
        self.allow_install = allow_install
        self.log = log
        self.label = "Postfix + Dovecot"
        self._dovecot: subprocess.Popen[bytes] | None = None
        self._postfix_started = False
        self._mail_ids: tuple[int, int] = (0, 0)
        self._versions: dict[str, str] = {}
        self._ports: dict[str, int] = {}

    # -- paths ------------------------------------------------------------------
    @property
    def pf_conf(self) -> Path:
        return self.dir / "postfix" / "conf"

    @property
    def dc_conf(self) -> Path:
        return self.dir / "dovecot" / "dovecot.conf"

    @property
    def mail_root(self) -> Path:
        return self.dir / "mail"

    def maildir(self, user: str) -> Path:
        return self.mail_root / user / "Maildir"

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        if os.geteuid() != 0:
            raise TargetUnavailable(
                "the peer needs root (Postfix's master and Dovecot start as root, "
                "then drop privileges)"
            )
        try:
            install.ensure_peer_packages(self.log, self.allow_install)
            self._mail_ids = install.ensure_mail_user(self.log)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise TargetUnavailable(str(exc)) from exc
        dv = _version(["dovecot", "--version"])
        if not dv.startswith("2.3"):
            raise TargetUnavailable(
                f"Dovecot {dv} found; this harness writes Dovecot 2.3 configuration "
                "(2.4 renamed most settings: ssl_server_*, passdb/userdb blocks with names, ...)"
            )
        self._versions = {
            "postfix": _version(["postconf", "-d", "-h", "mail_version"]),
            "dovecot": dv,
        }
        self.label = f"Postfix {self._versions['postfix']} + Dovecot {dv.split()[0]}"

        self.dir.mkdir(parents=True, exist_ok=True)
        # The unprivileged Postfix/Dovecot processes must traverse the tree.
        os.chmod(self.dir, 0o755)
        for p in self.dir.parents:
            if not os.stat(p).st_mode & 0o001:
                raise TargetUnavailable(
                    f"{p} is not traversable by other users; "
                    "use a work directory under /tmp (--workdir)"
                )
        base = free_port_block(2)
        self._ports = {"smtps": base, "imaps": base + 1}
        self._make_pki()
        self._write_postfix()
        self._write_dovecot()
        self._start_dovecot()
        self._start_postfix()
        self.smtp = Endpoint("127.0.0.1", self._ports["smtps"], implicit_tls=True)
        self.imap = Endpoint("127.0.0.1", self._ports["imaps"])

    def _make_pki(self) -> None:
        pki = BenchPKI(self.dir / "pki")
        self.pki = pki
        self.server_files = pki.server("localhost")
        self.ca_file = pki.ca_file
        ids = {}
        for name in ("avocat1", "greffier1", "greffier2"):
            files = pki.client(name, email=f"{name}@{DOMAIN}")
            ids[name] = Identity(name, f"{name}@{DOMAIN}", files.cert, files.key)
        self.sender = ids["avocat1"]
        self.reader = ids["greffier1"]
        self.background_reader = ids["greffier2"]
        self.recipient = DOSSIER_ADDRESS  # aliased to greffier1, like a dossier address
        self.background_recipient = ids["greffier2"].address

    def _write_postfix(self) -> None:
        pf = self.dir / "postfix"
        (pf / "conf").mkdir(parents=True, exist_ok=True)
        (pf / "queue").mkdir(exist_ok=True)
        (pf / "data").mkdir(exist_ok=True)
        shutil.chown(pf / "data", user="postfix")
        lmtp_socket = self.dir / "dovecot" / "run" / "lmtp"
        main_cf = f"""\
# Palais benchmark peer: self-contained Postfix instance (generated)
compatibility_level = 3.6
queue_directory = {pf / "queue"}
data_directory = {pf / "data"}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {pf / "postfix.log"}
maillog_file_prefixes = {pf}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $mydomain
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
biff = no
smtputf8_enable = no
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps =
virtual_alias_maps = inline:{{ {{ {DOSSIER_ADDRESS} = greffier1@{DOMAIN} }} }}
virtual_transport = lmtp:unix:{lmtp_socket}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# mutual TLS: a client certificate chaining to the bench CA is required
smtpd_tls_cert_file = {self.server_files.cert}
smtpd_tls_key_file = {self.server_files.key}
smtpd_tls_CAfile = {self.pki.ca_file}
smtpd_tls_security_level = encrypt
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
smtpd_tls_loglevel = 0
"""
        (pf / "conf" / "main.cf").write_text(main_cf)
        smtps = self._ports["smtps"]
        rows = [
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        master = [
            "# Palais benchmark peer (generated): smtps on 127.0.0.1 only, nothing chrooted",
            f"127.0.0.1:{smtps} inet n - n - - smtpd",
            "  -o smtpd_tls_wrappermode=yes",
            "  -o smtpd_tls_security_level=encrypt",
            "  -o smtpd_tls_req_ccert=yes",
        ]
        master += ["  ".join(r) for r in rows]
        (pf / "conf" / "master.cf").write_text("\n".join(master) + "\n")

    def _write_dovecot(self) -> None:
        dc = self.dir / "dovecot"
        (dc / "run").mkdir(parents=True, exist_ok=True)
        (dc / "state").mkdir(exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        uid, gid = self._mail_ids
        os.chown(self.mail_root, uid, gid)
        limit = self.max_sessions + 50
        conf = f"""\
# Palais benchmark peer: self-contained Dovecot 2.3 instance (generated)
instance_name = palaisbench-{os.getpid()}
base_dir = {dc / "run"}
state_dir = {dc / "state"}
protocols = imap lmtp
listen = 127.0.0.1
log_path = {dc / "dovecot.log"}
info_log_path = {dc / "dovecot.log"}
default_internal_user = dovecot
default_login_user = dovenull

# mutual TLS; the certificate's commonName is the login
ssl = required
ssl_cert = <{self.server_files.cert}
ssl_key = <{self.server_files.key}
ssl_ca = <{self.pki.ca_with_crl_file}
ssl_require_crl = yes
ssl_verify_client_cert = yes
auth_ssl_require_client_cert = yes
auth_ssl_username_from_cert = yes
ssl_cert_username_field = commonName
auth_mechanisms = external
auth_username_format = %Ln
disable_plaintext_auth = yes
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.mail_root}/%n
}}
mail_location = maildir:~/Maildir
mail_fsync = optimized
mail_max_userip_connections = {limit}
default_client_limit = {limit * 2 + 200}
default_process_limit = 100

service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self._ports["imaps"]}
    ssl = yes
  }}
  process_limit = {limit}
}}
service imap {{
  process_limit = {limit}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{DOMAIN}
}}
"""
        self.dc_conf.write_text(conf)
        res = _run(["doveconf", "-c", str(self.dc_conf), "-n"])
        if res.returncode != 0:
            raise TargetUnavailable(
                f"doveconf rejected the configuration: {res.stderr.strip()[-600:]}"
            )

    def _start_dovecot(self) -> None:
        def raise_fd_limit() -> None:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = max(soft, min(hard, 65536))
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

        with open(self.dir / "dovecot" / "stderr.log", "ab") as log:
            self._dovecot = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.dc_conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=raise_fd_limit,
                start_new_session=True,
            )
        proc = self._dovecot
        try:
            wait_for_port("127.0.0.1", self._ports["imaps"], 30, alive=lambda: proc.poll() is None)
            deadline = time.monotonic() + 10
            while not (self.dir / "dovecot" / "run" / "lmtp").exists():
                if time.monotonic() > deadline:
                    raise TargetUnavailable("Dovecot LMTP socket did not appear")
                time.sleep(0.05)
        except TargetUnavailable as exc:
            raise TargetUnavailable(
                f"Dovecot: {exc}; log: {self._tail(self.dir / 'dovecot' / 'dovecot.log')}"
            ) from exc

    def _start_postfix(self) -> None:
        conf = str(self.pf_conf)
        _run(["postfix", "-c", conf, "check"])  # creates the queue directories
        res = _run(["postfix", "-c", conf, "start"])
        if res.returncode != 0:
            raise TargetUnavailable(
                f"postfix start failed: {res.stderr.strip() or res.stdout.strip()}; "
                f"log: {self._tail(self.dir / 'postfix' / 'postfix.log')}"
            )
        self._postfix_started = True
        try:
            wait_for_port("127.0.0.1", self._ports["smtps"], 30)
        except TargetUnavailable as exc:
            raise TargetUnavailable(
                f"Postfix: {exc}; log: {self._tail(self.dir / 'postfix' / 'postfix.log')}"
            ) from exc

    @staticmethod
    def _tail(path: Path, n: int = 600) -> str:
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def _postfix_master_pid(self) -> int | None:
        try:
            return int(
                (self.dir / "postfix" / "queue" / "pid" / "master.pid").read_text().split()[0]
            )
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self._postfix_started:
            pid = self._postfix_master_pid()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _run(["postfix", "-c", str(self.pf_conf), "stop"], timeout=30)
            deadline = time.monotonic() + 15
            while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid and Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self._postfix_started = False
        if self._dovecot is not None:
            if self._dovecot.poll() is None:
                self._dovecot.terminate()
                try:
                    self._dovecot.wait(15)
                except subprocess.TimeoutExpired:
                    self._dovecot.kill()
                    self._dovecot.wait(5)
            self._dovecot = None

    # -- descriptions -----------------------------------------------------------
    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def settings(self) -> dict[str, Any]:
        return {
            "ports": dict(self._ports),
            "smtp": "Postfix smtpd, implicit TLS (wrappermode), smtpd_tls_req_ccert = yes",
            "delivery": "Postfix lmtp -> Dovecot LMTP (unix socket) -> Maildir, "
            "mail_fsync = optimized",
            "imap_auth": "AUTHENTICATE EXTERNAL (SASL-IR), username = certificate commonName",
            "imap_login_mode": "high-security (service_count = 1: "
            "one imap-login + one imap process per session)",
            "recipient": f"{DOSSIER_ADDRESS} (virtual alias to greffier1)",
            "workdir": str(self.dir),
        }

    def subject_prefix(self, recipient: str) -> str:
        return SUBJECT_PREFIX

    # -- hooks ----------------------------------------------------------------------
    def populate(self, mailbox: str, n: int, *, message_factory: Callable[[int], bytes]) -> str:
        """Write Maildir files directly; Dovecot indexes them on the first SELECT."""
        assert self.reader is not None
        uid, gid = self._mail_ids
        root = self.maildir(self.reader.name)
        folder = root / f".{mailbox}"
        dirs = [top / sub for top in (root, folder) for sub in ("", "cur", "new", "tmp")]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        (folder / "maildirfolder").touch()
        base_ts = 1_735_689_600
        cur = folder / "cur"
        for i in range(n):
            data = message_factory(i)
            # time-ordered names: Dovecot assigns UIDs to new files in time order
            flags = "S" if i % 3 else ""
            name = f"{base_ts + i}.M{i:06d}P1.bench,S={len(data)}:2,{flags}"
            fd = os.open(cur / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
        for d in (self.mail_root / self.reader.name, *dirs, folder / "maildirfolder"):
            os.chown(d, uid, gid)
        return mailbox

    # LMTP delivery processes linger after the ingest workloads and exit on their
    # own; they are not part of the IMAP sessions' cost.
    memory_exclude = frozenset({"lmtp"})

    def memory_root_pids(self) -> list[int]:
        return (
            [self._dovecot.pid]
            if self._dovecot is not None and self._dovecot.poll() is None
            else []
        )

    def quiesce(self, timeout: float = 30.0) -> bool:
        """Wait until the Postfix queue is empty (bounded)."""
        queue = self.dir / "postfix" / "queue"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = False
            for sub in ("maildrop", "incoming", "active", "deferred"):
                d = queue / sub
                if d.exists() and any(p.is_file() for p in d.rglob("*")):
                    busy = True
                    break
            if not busy:
                return True
            time.sleep(0.1)
        return False
