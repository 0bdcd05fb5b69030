"""A real Palais instance for end-to-end tests: `palais init` + `palais serve`."""

from __future__ import annotations

import atexit
import contextlib
import imaplib
import io
import json
import os
import random
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from palais.instance import PORT_OFFSETS
from palais.mailbox.identity import Role
from palais.pki.devpki import IssuedIdentity, issue_identity, load_dev_pki


def free_base() -> int:
    """A base port whose five listener ports are all free on 127.0.0.1."""
    for _ in range(200):
        # Below the kernel's ephemeral ports (32768 up, the largest offset is
        # 993): an outgoing connection made between `palais init` and
        # `palais serve` would otherwise hold a listener's port.
        base = random.randrange(10000, 31700, 7)
        ok = True
        for off in PORT_OFFSETS.values():
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + off))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


@dataclass
class Instance:
    root: Path
    demo: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def port(self, name: str) -> int:
        return int(self.demo["ports"][name])

    @property
    def ca(self) -> Path:
        return self.root / str(self.demo["ca"])

    def ident(self, name: str) -> dict[str, Any]:
        return dict(self.demo["identities"][name])

    def address(self, name: str) -> str:
        return str(self.demo["identities"][name]["address"])

    def cert(self, name: str) -> Path:
        return self.root / str(self.demo["identities"][name]["cert"])

    def key(self, name: str) -> Path:
        return self.root / str(self.demo["identities"][name]["key"])

    @property
    def dossier(self) -> dict[str, Any]:
        return dict(self.demo["dossiers"][0])

    def client_context(self, name: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if name is not None:
            ctx.load_cert_chain(self.cert(name), self.key(name))
        return ctx

    def start(self) -> None:
        assert self.proc is None
        self.log_path = self.root / "serve.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "palais", "serve", str(self.root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"palais serve exited: {self.read_log()}")
            if all(
                self._listening(self.port(n)) for n in ("smtps", "submission", "imaps", "court")
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"palais serve did not start: {self.read_log()}")

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def curl_send(self, who: str, message: Path, *extra: str) -> list[str]:
        """curl sending ``message`` as ``who`` to the demo dossier over SMTPS with EXTERNAL."""
        return [
            "curl",
            "-sS",
            "--cacert",
            str(self.ca),
            "--cert",
            str(self.cert(who)),
            "--key",
            str(self.key(who)),
            f"smtps://;AUTH=EXTERNAL@localhost:{self.port('smtps')}/client",
            "--mail-from",
            self.address(who),
            "--mail-rcpt",
            str(self.demo["dossiers"][0]["address"]),
            "-T",
            str(message),
            *extra,
        ]

    def curl_https(self, path: str, who: str | None = None) -> subprocess.CompletedProcess[str]:
        """GET ``path`` on the HTTPS listener with curl; stdout ends with the status code."""
        args = ["curl", "-sS", "-w", "\\n%{http_code}", "--cacert", str(self.ca)]
        if who:
            args += ["--cert", str(self.cert(who)), "--key", str(self.key(who))]
        return subprocess.run(
            [*args, f"https://localhost:{self.port('https')}{path}"],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def submit(self, subject: str, who: str = "avocat1", body: str = "Bonjour") -> None:
        """One message from ``who`` to the demo dossier over SMTPS (smtplib)."""
        msg = EmailMessage()
        msg["From"] = self.address(who)
        msg["To"] = self.dossier["address"]
        msg["Subject"] = f"[{self.dossier['number']}] {subject}"
        msg["Message-ID"] = f"<{uuid.uuid4().hex}@avocats.palais.test>"
        msg.set_content(body)
        with smtplib.SMTP_SSL(
            "localhost", self.port("smtps"), context=self.client_context(who), timeout=10
        ) as s:
            assert s.send_message(msg) == {}

    def imap(self, who: str) -> imaplib.IMAP4_SSL:
        """An IMAP session of ``who``, authenticated by its certificate (EXTERNAL)."""
        imap = imaplib.IMAP4_SSL(
            "localhost", self.port("imaps"), ssl_context=self.client_context(who), timeout=30
        )
        imap.authenticate("EXTERNAL", lambda _: b"")
        return imap

    def exchange_with_receipts(
        self, subject: str, body: str, attachment: bytes, filename: str
    ) -> tuple[bytes, list[bytes]]:
        """avocat1 sends a message with a PDF attachment to the dossier (SMTPS),
        greffier1 reads it (IMAP FETCH BODY[]: its first reading), and avocat1
        fetches over IMAP what it holds: the message as filed in Envoyés, and
        its receipts (deposit-and-delivery, then first read)."""
        msg = EmailMessage()
        msg["From"] = self.address("avocat1")
        msg["To"] = self.dossier["address"]
        msg["Subject"] = f"[{self.dossier['number']}] {subject}"
        msg["Message-ID"] = f"<{uuid.uuid4().hex}@avocats.palais.test>"
        msg.set_content(body)
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename=filename)
        with smtplib.SMTP_SSL(
            "localhost", self.port("smtps"), context=self.client_context("avocat1"), timeout=10
        ) as smtp:
            assert smtp.send_message(msg) == {}
        clerk = self.imap("greffier1")
        assert clerk.select("INBOX")[0] == "OK"
        assert clerk.fetch("1", "(BODY[])")[0] == "OK"
        clerk.logout()
        lawyer = self.imap("avocat1")
        (original,) = _fetch_all(lawyer, '"Envoy&AOk-s"')
        receipts = _fetch_all(lawyer, '"Accus&AOk-s de r&AOk-ception"')
        lawyer.logout()
        return original, receipts

    def new_card(
        self,
        name: str,
        address: str,
        number: str,
        role: Role = Role.AVOCAT,
        *,
        given_name: str = "Carte",
        surname: str = "Nouvelle",
    ) -> IssuedIdentity:
        """A new card from the instance's development CA, ``number`` as its serialNumber."""
        return issue_identity(
            load_dev_pki(self.root / "pki"),
            name,
            role=role,
            given_name=given_name,
            surname=surname,
            address=address,
            serial_number=number,
        )

    def imap_card(self, card: IssuedIdentity) -> imaplib.IMAP4_SSL:
        """An IMAP session authenticated by ``card``; its socket closed if refused."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(card.cert_path, card.key_path)
        imap = imaplib.IMAP4_SSL("localhost", self.port("imaps"), ssl_context=ctx, timeout=30)
        try:
            imap.authenticate("EXTERNAL", lambda _: b"")
        except BaseException:
            imap.shutdown()
            raise
        return imap

    def serve_to_the_end(self) -> subprocess.CompletedProcess[str]:
        """``palais serve ROOT`` in a process of its own, waited for: for a
        start that must fail (its exit status and what it said)."""
        return subprocess.run(
            [sys.executable, "-m", "palais", "serve", str(self.root)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``palais admin ARGS -d ROOT`` in a process of its own."""
        return subprocess.run(
            [sys.executable, "-m", "palais", "admin", *args, "-d", str(self.root)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def admin_here(self, *args: str, out: io.StringIO | None = None) -> tuple[int, str]:
        """``palais admin ARGS -d ROOT`` run in this process (error cases: a
        process each costs a second or more): (exit status, stderr)."""
        from palais.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out or io.StringIO()):
            try:
                status = main(["admin", *args, "-d", str(self.root)])
            except SystemExit as exit:  # argparse's usage errors
                status = int(exit.code or 0)
        return status, err.getvalue()

    def admin_json(self, *args: str) -> list[dict[str, Any]]:
        """The JSON lines ``palais admin ARGS --json`` prints; it must succeed.
        Run in this process: tests read state back with it, often polling."""
        out = io.StringIO()
        status, err = self.admin_here(*args, "--json", out=out)
        assert status == 0, err
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def _fetch_all(imap: imaplib.IMAP4_SSL, box: str) -> list[bytes]:
    assert imap.select(box, readonly=True)[0] == "OK"
    _, data = imap.fetch("1:*", "(BODY.PEEK[])")
    return [item[1] for item in data if isinstance(item, tuple)]


# `palais init` output made once per test session (its keys and certificates
# are generated per run, never committed): most of an init's seconds go into
# key generation, and an instance needs its own copy, not its own keys.
_template: Path | None = None


def _init_template() -> Path:
    """A directory holding what `palais init` made, ports still those of its base."""
    global _template
    if _template is None:
        parent = Path(tempfile.mkdtemp(prefix="palais-init-"))
        atexit.register(shutil.rmtree, parent, ignore_errors=True)
        root = parent / "instance"
        subprocess.run(
            [sys.executable, "-m", "palais", "init", str(root), "--ports", str(TEMPLATE_BASE)],
            check=True,
            capture_output=True,
            env=dict(os.environ),
        )
        _template = root
    return _template


# The template's listener ports: rewritten in every copy, never listened on.
TEMPLATE_BASE = 10000


def init_copy(root: Path, base: int) -> None:
    """What `palais init ROOT --ports BASE` makes, from the session's template."""
    shutil.copytree(_init_template(), root, symlinks=True)
    config = root / "palais.toml"
    text = config.read_text(encoding="utf-8")
    for name, offset in PORT_OFFSETS.items():
        line = f"\n{name} = {TEMPLATE_BASE + offset}\n"
        assert text.count(line) == 1, (name, text)
        text = text.replace(line, f"\n{name} = {base + offset}\n")
    config.write_text(text, encoding="utf-8")
    demo_path = root / "demo.json"
    demo = json.loads(demo_path.read_text(encoding="utf-8"))
    assert demo["ports"] == {n: TEMPLATE_BASE + o for n, o in PORT_OFFSETS.items()}
    demo["ports"] = {n: base + o for n, o in PORT_OFFSETS.items()}
    demo_path.write_text(json.dumps(demo, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def create_instance(
    root: Path, *, extra_config: str = "", event_loop: str | None = None
) -> Instance:
    base = free_base()
    init_copy(root, base)
    config = root / "palais.toml"
    if event_loop is not None:
        text = config.read_text(encoding="utf-8")
        assert 'event_loop = "uvloop"' in text
        config.write_text(text.replace('event_loop = "uvloop"', f'event_loop = "{event_loop}"'))
    if extra_config:
        with config.open("a", encoding="utf-8") as f:
            f.write("\n" + extra_config)
    demo = json.loads((root / "demo.json").read_text(encoding="utf-8"))
    return Instance(root=root, demo=demo)
