"""SIGKILL while clients submit: every message that got a 250 is there after restart."""

from __future__ import annotations

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


def _submit_until_dead(inst: Instance, accepted: list[str], stop: threading.Event) -> None:
    ctx = inst.client_context("avocat1")
    deadline = time.monotonic() + MAX_SECONDS
    try:
        with smtplib.SMTP_SSL("localhost", inst.port("smtps"), context=ctx, timeout=10) as s:
            s.ehlo()
            while not stop.is_set() and time.monotonic() < deadline:
                mid = f"<{uuid.uuid4().hex}@durability.test>"
                body = (
                    f"From: {inst.address('avocat1')}\r\nTo: {inst.dossier['address']}\r\n"
                    f"Subject: [{inst.dossier['number']}] durabilite\r\nMessage-ID: {mid}\r\n\r\n"
                    + ("x" * 70 + "\r\n")
                    * 30
                )
                code, _ = s.mail(inst.address("avocat1"))
                code, _ = s.rcpt(inst.dossier["address"])
                code, _ = s.data(body)
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
