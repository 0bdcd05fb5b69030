"""Alerts end to end: a lawyer chooses an outside address with curl and their
card certificate, a clerk writes in their dossier over SMTP, and the outside
relay (an aiosmtpd server) receives a notice naming the dossier and the kind
of event, without the subject nor the text; the relay down, across a
restart; a daily digest; `palais client alerts`."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.alerts_relay import OutsideRelay, free_port
from tests.e2e.instance import Instance, create_instance

OUTSIDE = "maitre.un@exemple.fr"


def alerts_config(port: int, digest_time: str) -> str:
    return (
        "[alerts]\n"
        f'relay_host = "127.0.0.1"\nrelay_port = {port}\n'
        f'timezone = "UTC"\ndigest_time = "{digest_time}"\n'
        "poll_interval = 0.2\nretry_interval = 0.5\nmax_retry_interval = 1.0\n"
    )


@pytest.fixture
def relay() -> Iterator[OutsideRelay]:
    r = OutsideRelay(free_port())
    yield r
    r.stop()


@pytest.fixture
def alerted(tmp_path: Path, relay: OutsideRelay) -> Iterator[Instance]:
    relay.start()  # its port held from now on, before the instance picks its own
    inst = create_instance(tmp_path / "inst", extra_config=alerts_config(relay.port, "03:00"))
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


def curl_alerts(
    inst: Instance, method: str, who: str | None, body: object = None
) -> tuple[int, dict[str, object]]:
    args = ["curl", "-sS", "-w", "\n%{http_code}", "--cacert", str(inst.ca), "-X", method]
    if who:
        args += ["--cert", str(inst.cert(who)), "--key", str(inst.key(who))]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    done = subprocess.run(
        [*args, f"https://localhost:{inst.port('https')}/api/alerts"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(text)


def clerk_writes(inst: Instance, to: str, secret: str) -> None:
    """greffier1 writes to ``to`` in the demo dossier over SMTPS."""
    msg = EmailMessage()
    msg["From"] = inst.address("greffier1")
    msg["To"] = to
    msg["Subject"] = f"[{inst.dossier['number']}] {secret} objet"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@justice.palais.test>"
    msg.set_content(f"{secret} corps du message")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename=f"{secret}.pdf")
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context("greffier1")
    ) as s:
        s.send_message(msg)


def court_pushes_a_hearing(inst: Instance) -> None:
    """court1 sends a dossier event (a hearing added) on the court listener."""
    doc = {
        "dossier": inst.dossier["number"],
        "juridiction_code": "CPH-BORDEAUX",
        "occurred_at": datetime.now(UTC).isoformat(),
        "event": {
            "kind": "hearing_added",
            "hearing": {
                "id": "H1",
                "date": "2027-01-14",
                "time": "09:30",
                "formation": "bureau de jugement",
                "type": "audience de jugement",
                "room": "salle 3",
            },
        },
    }
    msg = EmailMessage()
    msg["From"] = inst.address("court1")
    msg["To"] = inst.dossier["address"]
    msg["Subject"] = f"[{inst.dossier['number']}] événement du dossier"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@cph-bordeaux.juridictions.palais.test>"
    msg.set_content("Événement du dossier.")
    msg.add_attachment(
        json.dumps(doc).encode(),
        maintype="application",
        subtype="vnd.palais.dossier-event+json",
        filename="evenement.json",
    )
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
        smtp.starttls(context=inst.client_context("court1"))
        assert smtp.send_message(msg) == {}


def wait_in_log(inst: Instance, text: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inst.read_log().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not {count} times in the log: {inst.read_log()[-2000:]}")


def test_an_immediate_alert_set_with_curl_tells_of_a_new_message_without_its_content(
    alerted: Instance, relay: OutsideRelay
) -> None:
    inst = alerted
    number = inst.dossier["number"]
    assert curl_alerts(inst, "GET", "avocat1") == (200, {"alert": None})
    status, answer = curl_alerts(inst, "PUT", "avocat1", {"address": OUTSIDE, "mode": "immediate"})
    assert status == 200, answer
    alert = answer["alert"]
    assert isinstance(alert, dict)
    assert (alert["address"], alert["mode"]) == (OUTSIDE, "immediate")
    assert curl_alerts(inst, "GET", "avocat1")[1]["alert"] == alert

    # Bad input: 4xx with a reason, nothing changed.
    assert curl_alerts(inst, "PUT", "avocat1", {"address": "pas-une-adresse"}) == (
        422,
        {"error": "not an e-mail address: 'pas-une-adresse' (expected name@domain)"},
    )
    status, answer = curl_alerts(inst, "PUT", "avocat1", {"address": inst.address("avocat2")})
    assert status == 422 and "outside address" in str(answer["error"])
    assert curl_alerts(inst, "PUT", "avocat1", {"adresse": OUTSIDE}) == (
        400,
        {"error": "unknown field(s): adresse"},
    )
    assert curl_alerts(inst, "PUT", "avocat1", {"address": OUTSIDE, "mode": "hebdo"}) == (
        422,
        {"error": '"mode" must be "immediate" or "digest"'},
    )
    assert curl_alerts(inst, "GET", None)[0] == 401
    assert curl_alerts(inst, "GET", "avocat1")[1]["alert"] == alert

    clerk_writes(inst, inst.address("avocat1"), "SECRET1")
    (mail,) = relay.wait_for(1)
    assert mail["To"] == OUTSIDE
    assert mail["Subject"] == f"[Palais-dev] Dossier {number} : nouveau message reçu"
    raw = relay.received[0][2]
    assert b"SECRET1" not in raw and inst.address("greffier1").encode() not in raw
    assert relay.received[0][1] == [OUTSIDE]

    # The relay goes down: the next notice waits, across a restart of the gateway.
    relay.stop()
    clerk_writes(inst, inst.address("avocat1"), "SECRET2")
    wait_in_log(inst, "alerts: relay unavailable", 1)
    inst.stop()
    tried = inst.read_log().count("alerts: relay unavailable")
    inst.start()
    wait_in_log(inst, "alerts: relay unavailable", tried + 1)  # the restarted one tries too
    relay.start()
    relay.wait_for(2)
    # A later one arrives after it: had the second been sent twice, it would show.
    clerk_writes(inst, inst.address("avocat1"), "SECRET3")
    mails = relay.wait_for(3)
    time.sleep(1.0)  # a few more looks of the sender (poll_interval 0.2 s)
    mails = relay.mails()
    assert len(mails) == 3, [m["Subject"] for m in mails]
    assert len({m["Message-ID"] for m in mails}) == 3
    assert all(b"SECRET" not in d for _, _, d in relay.received)

    # avocat1 writes to the dossier: their deposit receipt tells them nothing
    # new (no notice); the clerk's first read of the message does.
    inst.submit("SECRET6 demande", who="avocat1", body="SECRET6")
    lawyer = inst.imap("avocat1")
    try:
        assert lawyer.select(f'"Dossiers/{number}/Accus&AOk-s de r&AOk-ception"')[0] == "OK"
        assert lawyer.search(None, "SUBJECT", "SECRET6")[1][0]  # the deposit receipt is filed
    finally:
        lawyer.logout()
    time.sleep(1.0)  # a few more looks of the sender
    assert len(relay.mails()) == 3
    clerk = inst.imap("greffier1")
    try:
        assert clerk.select("INBOX")[0] == "OK"
        typ, found = clerk.search(None, "SUBJECT", "SECRET6")
        assert typ == "OK" and found[0], found
        assert clerk.fetch(found[0].split()[-1], "(BODY[])")[0] == "OK"
    finally:
        clerk.logout()
    mails = relay.wait_for(4)
    assert mails[3]["Subject"] == f"[Palais-dev] Dossier {number} : nouvel accusé de réception"

    # The court system adds a hearing: told as the dossier's event, once (the
    # Fiche dossier it puts in the lawyer's Reçus is no new message).
    court_pushes_a_hearing(inst)
    mails = relay.wait_for(5)
    assert mails[4]["Subject"] == f"[Palais-dev] Dossier {number} : événement du dossier"
    time.sleep(1.0)  # a few more looks of the sender
    assert len(relay.mails()) == 5

    # The operator sees them in /metrics (counted since the restart).
    scraped = inst.curl_https("/metrics", "admin1").stdout
    assert "\npalais_alerts_sent_total 4.0\n" in scraped, scraped
    failures = re.search(r"\npalais_alerts_failures_total (\d+)\.0\n", scraped)
    assert failures is not None and int(failures.group(1)) >= 1

    # No more alerts: nothing is sent any more.
    assert curl_alerts(inst, "DELETE", "avocat1") == (200, {"removed": True})
    assert curl_alerts(inst, "GET", "avocat1") == (200, {"alert": None})


def client(inst: Instance, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "palais",
            "client",
            "--cert",
            str(inst.cert(who)),
            "--key",
            str(inst.key(who)),
            "--ca",
            str(inst.ca),
            "--https-port",
            str(inst.port("https")),
            "alerts",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_palais_client_sets_a_digest_sent_at_the_configured_hour(
    alerted: Instance, relay: OutsideRelay
) -> None:
    inst = alerted
    number = inst.dossier["number"]
    assert client(inst, "avocat2", "show").stdout == "aucune alerte\n"
    refused = client(inst, "avocat2", "set", "pas-une-adresse")
    assert refused.returncode == 1
    assert "refusé par le serveur (422) : not an e-mail address" in refused.stderr
    done = client(inst, "avocat2", "set", "maitre.deux@exemple.fr", "--digest")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("alertes à maitre.deux@exemple.fr : un récapitulatif par jour")
    shown = client(inst, "avocat2", "show", "--json")
    assert json.loads(shown.stdout)["mode"] == "digest"

    clerk_writes(inst, inst.address("avocat2"), "SECRET4")
    clerk_writes(inst, inst.address("avocat2"), "SECRET5")
    # The digest hour (03:00 UTC in the fixture) is moved to a few seconds
    # from now: the gateway restarts with it, and sends the day's digest then.
    inst.stop()
    config = inst.root / "palais.toml"
    soon = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%H:%M:%S")
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            'digest_time = "03:00"', f'digest_time = "{soon}"'
        ),
        encoding="utf-8",
    )
    inst.start()
    (mail,) = relay.wait_for(1)
    assert str(mail["Subject"]).startswith("[Palais-dev] Récapitulatif du ")
    assert mail["To"] == "maitre.deux@exemple.fr"
    body = mail.get_content()
    assert f"- dossier {number} : 2 nouveaux messages reçus" in body
    assert b"SECRET" not in relay.received[0][2]

    off = client(inst, "avocat2", "off")
    assert (off.returncode, off.stdout) == (0, "alertes arrêtées\n")
    assert client(inst, "avocat2", "off").stdout == "aucune alerte\n"
    inst.stop()
    gone = client(inst, "avocat2", "show")
    # Unreachable (or, should another program take the port meanwhile, its TLS refused).
    assert gone.returncode == 3, gone.stderr
    assert "serveur injoignable" in gone.stderr or "connexion TLS refusée" in gone.stderr
