"""SIGKILL while clients submit: every message that got a 250 is there after restart."""

from __future__ import annotations

import hashlib
import imaplib
import re
import signal
import smtplib
import ssl
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.e2e.instance import Instance, create_instance

CLIENTS = 6
MAX_SECONDS = 20.0


def _message(inst: Instance, mid: str) -> str:
    """The message sent with ``mid``; its body is derived from the Message-ID, so a
    message stored with another one's bytes (or torn ones) does not match."""
    digest = hashlib.sha256(mid.encode()).hexdigest()
    return (
        f"From: {inst.address('avocat1')}\r\nTo: {inst.dossier['address']}\r\n"
        f"Subject: [{inst.dossier['number']}] durabilite\r\nMessage-ID: {mid}\r\n\r\n"
        + "".join(f"{i:02d} {digest} {digest[i:]}\r\n" for i in range(30))
    )


_ADDED = re.compile(rb"(?:(?:Received|Date):[^\r]*\r\n(?:[ \t][^\r]*\r\n)*)*")


def _intact(stored: bytes, sent: bytes) -> bool:
    """The bytes sent, after what submission adds in front of them (the
    Received trace, the Date it lacked: RFC 6409 section 8), nothing else."""
    added = _ADDED.match(stored)
    return added is not None and stored[added.end() :] == sent and added.end() > 0


def _submit_until_dead(
    inst: Instance,
    accepted: list[str],
    stop: threading.Event,
    attempted: list[str] | None = None,
) -> None:
    ctx = inst.client_context("avocat1")
    deadline = time.monotonic() + MAX_SECONDS
    try:
        with smtplib.SMTP_SSL("localhost", inst.port("smtps"), context=ctx, timeout=10) as s:
            s.ehlo()
            while not stop.is_set() and time.monotonic() < deadline:
                mid = f"<{uuid.uuid4().hex}@durability.test>"
                if attempted is not None:
                    attempted.append(mid)
                code, _ = s.mail(inst.address("avocat1"))
                code, _ = s.rcpt(inst.dossier["address"])
                code, _ = s.data(_message(inst, mid))
                if code == 250:
                    accepted.append(mid)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
        print("client ended:", repr(e))  # the server died under us: expected


def test_sigkill_loses_no_accepted_message(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance")
    inst.start()
    accepted: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_submit_until_dead, args=(inst, accepted, stop))
        for _ in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + MAX_SECONDS
    while len(accepted) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
        if not any(t.is_alive() for t in threads):
            break
    assert inst.proc is not None
    inst.proc.send_signal(signal.SIGKILL)
    inst.proc.wait()
    inst.proc = None
    stop.set()
    for t in threads:
        t.join(timeout=30)
    got = list(accepted)
    assert len(got) >= 150

    inst.start()  # recovers the WAL and opens a fresh blob segment
    try:
        engine = create_engine(f"sqlite:///{inst.root / 'palais.db'}")
        with engine.connect() as conn:
            stored = set(
                conn.execute(
                    text(
                        "SELECT m.message_id FROM message m"
                        " JOIN entry e ON e.message_id = m.id"
                        " JOIN mailbox b ON b.id = e.mailbox_id"
                        " WHERE b.owner = :o AND b.name = 'INBOX'"
                    ),
                    {"o": inst.dossier["service_address"]},
                ).scalars()
            )
        engine.dispose()
        missing = [m for m in got if m not in stored]
        assert not missing, f"{len(missing)} accepted messages lost of {len(got)}"
    finally:
        inst.stop()


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    # On the standard asyncio loop: the other end-to-end tests run on uvloop.
    inst = create_instance(tmp_path / "instance", event_loop="asyncio")
    inst.start()
    accepted: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=_submit_until_dead, args=(inst, accepted, stop))
    t.start()
    deadline = time.monotonic() + MAX_SECONDS
    while len(accepted) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inst.stop(signal.SIGTERM) == 0
    stop.set()
    t.join(timeout=30)
    log = inst.read_log()
    assert "stopping" in log and "stopped" in log
    assert "loop=asyncio" in log
    assert "Traceback" not in log, log[-4000:]
    inst.start()
    inst.stop()


KILLS = 3
PER_ROUND = 50  # accepted messages before each kill
_MID = re.compile(rb"^Message-ID: (<[0-9a-f]+@durability\.test>)\r$", re.MULTILINE | re.IGNORECASE)


def _stored(inst: Instance, who: str, mailbox: str) -> dict[str, list[bytes]]:
    """Every durability message in ``who``'s ``mailbox``, read over IMAP, by Message-ID."""
    conn = imaplib.IMAP4_SSL(
        "localhost", inst.port("imaps"), ssl_context=inst.client_context(who), timeout=30
    )
    try:
        conn.authenticate("EXTERNAL", lambda _: b"")
        typ, _ = conn.select(mailbox, readonly=True)
        assert typ == "OK", mailbox
        typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert typ == "OK"
    finally:
        conn.logout()
    found: dict[str, list[bytes]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        raw = item[1]
        match = _MID.search(raw)
        assert match is not None, raw[:300]
        found.setdefault(match.group(1).decode(), []).append(raw)
    return found


def _check_boxes(inst: Instance, accepted: list[str], attempted: list[str]) -> None:
    """Each accepted message once, byte-exact, in the dossier's service mailbox and
    in the sender's copy; a message cut off by the kill at most once, and intact."""
    known = set(attempted)
    for who, mailbox in (("greffier1", "INBOX"), ("avocat1", '"Envoy&AOk-s"')):
        stored = _stored(inst, who, mailbox)
        missing = [m for m in accepted if m not in stored]
        assert not missing, f"{who} {mailbox}: {len(missing)} of {len(accepted)} accepted lost"
        for mid, copies in stored.items():
            assert mid in known, f"{who} {mailbox}: a message nobody sent: {mid}"
            assert len(copies) == 1, f"{who} {mailbox}: {mid} stored {len(copies)} times"
            assert _intact(copies[0], _message(inst, mid).encode()), (
                f"{who} {mailbox}: {mid} altered"
            )


def test_repeated_sigkill_under_load(tmp_path: Path) -> None:
    """Three SIGKILLs under load, each followed by a restart and a full read-back
    over IMAP: recovery must also survive a crash of a recovered instance."""
    inst = create_instance(tmp_path / "instance")
    inst.start()
    accepted: list[str] = []
    attempted: list[str] = []
    try:
        for kill in range(KILLS):
            before = len(accepted)
            stop = threading.Event()
            threads = [
                threading.Thread(target=_submit_until_dead, args=(inst, accepted, stop, attempted))
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            deadline = time.monotonic() + MAX_SECONDS
            while len(accepted) - before < PER_ROUND and time.monotonic() < deadline:
                time.sleep(0.01)
                if not any(t.is_alive() for t in threads):
                    break
            assert inst.proc is not None
            inst.proc.send_signal(signal.SIGKILL)
            inst.proc.wait()
            inst.proc = None
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert len(accepted) - before >= PER_ROUND, f"kill {kill + 1}: too few accepted"
            inst.start()
            print(f"kill {kill + 1}: {len(accepted)} accepted of {len(attempted)} sent")
            _check_boxes(inst, list(accepted), list(attempted))
        log = inst.read_log()
        assert "Traceback" not in log, log[-4000:]
    finally:
        if inst.proc is not None:
            inst.stop()
