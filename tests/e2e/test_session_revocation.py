"""Open sessions of a running `palais serve` cut when their certificate is revoked
or their account deactivated: IMAP BYE [ALERT] (even in IDLE), SMTP 421; others stay."""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import re
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from palais.pki.devpki import load_dev_pki, revoke
from palais.storage.engine import make_engine
from palais.trust_live import import_crl
from tests.e2e.instance import Instance, create_instance

INTERVAL = 0.5  # [limits] session_check_interval
# The trust watcher's poll ([trust] watch_interval) plus two checks, with room
# for a loaded test machine; the default 30 s gives "within a minute".
DEADLINE = 10.0


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("session-revocation") / "instance"
    inst = create_instance(
        root,
        extra_config=(
            f"[limits]\nsession_check_interval = {INTERVAL}\n"
            "[trust]\nwatch_interval = 0.5\ncrl_fetch = false\n"
        ),
    )
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


def idling(inst: Instance, who: str) -> imaplib.IMAP4_SSL:
    """An authenticated IMAP session of ``who`` in IDLE on its INBOX."""
    imap = inst.imap(who)
    assert imap.select("INBOX")[0] == "OK"
    imap.send(b"i1 IDLE\r\n")
    assert imap.readline().startswith(b"+ ")
    return imap


def smtp_after_ehlo(inst: Instance, who: str) -> smtplib.SMTP_SSL:
    smtp = smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context(who), timeout=DEADLINE
    )
    assert smtp.ehlo()[0] == 250
    return smtp


def until_closed(imap: imaplib.IMAP4_SSL) -> tuple[list[bytes], float]:
    """The lines the server sends until it closes the connection, and when it did."""
    imap.sock.settimeout(DEADLINE)
    lines: list[bytes] = []
    while True:
        line = imap.readline()
        if not line:
            return lines, time.monotonic()
        lines.append(line)


def still_open(imap: imaplib.IMAP4_SSL) -> None:
    imap.send(b"DONE\r\n")
    assert imap.readline().startswith(b"i1 OK")
    assert imap.noop()[0] == "OK"


def login(inst: Instance, who: str) -> imaplib.IMAP4_SSL | None:
    """An authenticated IMAP session of ``who``, or None if the gateway refuses it."""
    try:
        imap = imaplib.IMAP4_SSL(
            "localhost", inst.port("imaps"), ssl_context=inst.client_context(who), timeout=30
        )
    except (ssl.SSLError, ConnectionError):
        return None  # refused at the handshake
    try:
        imap.authenticate("EXTERNAL", lambda _: b"")
    except (imaplib.IMAP4.error, ssl.SSLError, ConnectionError):
        with contextlib.suppress(OSError):
            imap.shutdown()
        return None
    return imap


def deactivate(inst: Instance, who: str) -> None:
    """`palais admin account deactivate`, as an operator runs it."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "palais",
            "admin",
            "account",
            "deactivate",
            inst.address(who),
            "--reason",
            "left the bar",
            "-d",
            str(inst.root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def revoke_and_import(inst: Instance, who: str) -> None:
    """The CA revokes the card; the operator imports its new CRL into the gateway's trust."""
    crl = revoke(load_dev_pki(inst.root / "pki"), inst.cert(who))
    engine = make_engine(f"sqlite:///{inst.root / 'palais.db'}", writer=True)
    try:
        import_crl(
            engine, crl.read_bytes(), source=str(crl), actor="operator:test", reason="card lost"
        )
    finally:
        engine.dispose()


def fingerprint(inst: Instance, who: str) -> str:
    der = ssl.PEM_cert_to_DER_cert(inst.cert(who).read_text(encoding="ascii"))
    return hashlib.sha256(der).hexdigest()


def wait_for_log(inst: Instance, pattern: str) -> str:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = re.search(pattern, inst.read_log())
        if found:
            return found.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no log line {pattern!r} in:\n{inst.read_log()[-3000:]}")


def test_a_deactivated_account_loses_its_open_sessions(inst: Instance) -> None:
    who, bystander = "avocat2", "avocat3"
    imap = idling(inst, who)
    smtp = smtp_after_ehlo(inst, who)
    other = idling(inst, bystander)
    other_smtp = smtp_after_ehlo(inst, bystander)
    try:
        started = time.monotonic()
        deactivate(inst, who)
        lines, closed_at = until_closed(imap)
        assert lines == [b"* BYE [ALERT] Your account has been deactivated\r\n"]
        assert closed_at - started < DEADLINE
        # Idle between transactions: 421 with the reason, then the connection closes.
        code, text = smtp.getreply()
        assert (code, text) == (421, b"4.7.0 Your account has been deactivated")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
        # Another account's sessions are untouched.
        still_open(other)
        assert other_smtp.noop()[0] == 250
        wait_for_log(
            inst,
            rf"session closed listener=imaps identity={re.escape(inst.address(who))} "
            rf"fingerprint={fingerprint(inst, who)} reason=account-deactivated",
        )
        wait_for_log(
            inst, rf"session closed listener=smtps identity={re.escape(inst.address(who))}"
        )
        # Nor can it stay: refused at login, or (let in by the directory's
        # few seconds of identity cache) cut at the next check.
        again = login(inst, who)
        if again is not None:
            lines, _ = until_closed(again)
            assert lines == [b"* BYE [ALERT] Your account has been deactivated\r\n"]
            again.shutdown()
    finally:
        for conn in (other, imap):
            with contextlib.suppress(OSError):
                conn.shutdown()
        for s in (other_smtp, smtp):
            with contextlib.suppress(OSError):
                s.close()


def test_a_revoked_certificate_is_cut_in_idle_and_between_transactions(inst: Instance) -> None:
    who, bystander = "avocat1", "greffier1"
    imap = idling(inst, who)
    smtp = smtp_after_ehlo(inst, who)
    other = idling(inst, bystander)
    try:
        started = time.monotonic()
        revoke_and_import(inst, who)
        lines, closed_at = until_closed(imap)
        assert lines == [
            b"* BYE [ALERT] Your certificate is no longer accepted "
            b"(revoked, expired or no longer trusted)\r\n"
        ]
        assert closed_at - started < DEADLINE
        code, text = smtp.getreply()
        assert code == 421 and text.startswith(b"4.7.0 Your certificate is no longer accepted")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
        still_open(other)
        # The log says why in detail (the client was told nothing of it).
        wait_for_log(
            inst,
            rf"session closed listener=imaps identity={re.escape(inst.address(who))} "
            rf"fingerprint={fingerprint(inst, who)} reason=certificate-refused "
            r"detail=[^\n]*revoked",
        )
        # A new connection with that card fails at the handshake or at login.
        assert login(inst, who) is None
    finally:
        for conn in (other, imap):
            with contextlib.suppress(OSError):
                conn.shutdown()
        with contextlib.suppress(OSError):
            smtp.close()
