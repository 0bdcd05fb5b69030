"""Court systems on a running instance: the relay to their own SMTP endpoint
(durable queue, restarts of either side, DKIM-signed, non-delivery receipt
when it gives up) and the DKIM check of what they push.

The court system's endpoint is an aiosmtpd server in the test, with
STARTTLS requiring a client certificate (the gateway's relay certificate,
issued per run by the instance's infrastructure CA) and presenting the
court system's own certificate.
"""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from palais.pki import certbuilder
from palais.pki.court_dkim import parse_records
from palais.pki.devpki import INFRASTRUCTURE, load_dev_pki
from palais.pki.dkim import generate_dkim_keys, sign_outgoing
from tests.e2e.instance import Instance, create_instance, free_base

COURT_DOMAIN = "cph-bordeaux.juridictions.palais.test"
RECEIPTS_BOX = '"Accus&AOk-s de r&AOk-ception"'


# -- the court system's endpoint -------------------------------------------------


@dataclass
class Recorder:
    """Every message the endpoint said 250 to, with the client certificate seen."""

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    refuse: Callable[[bytes], str | None] = lambda _data: None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        refusal = self.refuse(data)
        if refusal is not None:
            return refusal
        transport = server.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        with self.lock:
            self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), data))
            self.peers.append(str(cert.get("subject") if cert else None))
        return "250 2.0.0 Enregistré"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(message_from_bytes(d)["Message-ID"]) for _, _, d in self.received]


def endpoint(inst: Instance, port: int, recorder: Recorder) -> Controller:
    """The court system's SMTP endpoint: STARTTLS required, a client certificate
    from the instance's infrastructure CA required, court1's certificate shown."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(inst.ca))
    context.load_cert_chain(inst.cert("court1"), inst.key("court1"))
    context.verify_mode = ssl.CERT_REQUIRED
    return Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        ready_timeout=10,
    )


def relay_certificate(inst: Instance) -> None:
    """The gateway's relay client certificate at its default place (pki/relay.pem)."""
    pki = load_dev_pki(inst.root / "pki")
    ca = certbuilder.CertificateAuthority.load(
        pki.ca_cert_path(INFRASTRUCTURE), pki.ca_key_path(INFRASTRUCTURE)
    )
    issued = ca.issue(
        certbuilder.name("Palais relais (développement)", organization="Palais", country="FR"),
        profile=certbuilder.CLIENT,
    )
    issued.write(inst.root / "pki" / "relay.pem", inst.root / "pki" / "relay.key")


def free_port() -> int:
    base = free_base()
    return base + 1  # a port of a free range, not one the instance uses


# -- lawyers and court systems sending -------------------------------------------


def send_to_court(inst: Instance, subject: str) -> str:
    """avocat1 writes to the dossier with the court system in copy; the Message-ID."""
    msg = EmailMessage()
    message_id = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    msg["From"] = inst.address("avocat1")
    msg["To"] = inst.dossier["address"]
    msg["Cc"] = inst.address("court1")
    msg["Subject"] = f"[{inst.dossier['number']}] {subject}"
    msg["Message-ID"] = message_id
    msg.set_content(f"{subject}\n")
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context("avocat1"), timeout=10
    ) as s:
        assert s.send_message(msg) == {}
    return message_id


def court_push(inst: Instance, data: bytes) -> tuple[int, str]:
    """court1 pushes ``data`` into the demo dossier on the court listener; the DATA reply."""
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as s:
        s.starttls(context=inst.client_context("court1"))
        s.ehlo()
        s.mail(inst.address("court1"))
        s.rcpt(inst.dossier["address"])
        code, text = s.data(data)
    return code, text.decode()


def court_message(inst: Instance, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = inst.address("court1")
    msg["To"] = inst.dossier["address"]
    msg["Subject"] = f"[{inst.dossier['number']}] {subject}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{COURT_DOMAIN}>"
    msg["Date"] = "Mon, 30 Nov 2026 10:00:00 +0100"
    msg.set_content("Audience fixee au 12 janvier.\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def fetch_all(inst: Instance, who: str, box: str) -> list[bytes]:
    imap = inst.imap(who)
    try:
        typ, _ = imap.select(box, readonly=True)
        assert typ == "OK"
        _, data = imap.fetch("1:*", "(BODY.PEEK[])")
        return [item[1] for item in data if isinstance(item, tuple)]
    finally:
        imap.logout()


def gateway_dns(inst: Instance) -> Callable[..., bytes]:
    """The gateway's published DKIM records (dkim-dns.txt), as a resolver would answer."""
    records = parse_records((inst.root / "pki" / "dkim" / "dkim-dns.txt").read_text())

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip(".").lower(), "").encode()

    return lookup


# -- the instances ---------------------------------------------------------------


@dataclass
class CourtSide:
    inst: Instance
    port: int
    court_keys: Path


def _instance(root: Path, *, relay: str, failure: str) -> CourtSide:
    port = free_port()
    keys = root / "court-dkim"
    keys.mkdir(parents=True)
    generate_dkim_keys(keys, COURT_DOMAIN, "portalis")
    inst = create_instance(
        root / "i",
        extra_config=(
            "[court_relay]\n"
            f"{relay}\n"
            "[court_relay.endpoints]\n"
            f'"portalis@{COURT_DOMAIN}" = "127.0.0.1:{port}"\n'
            "[court_dkim]\n"
            f'failure = "{failure}"\n'
            f'records = ["{keys / "dkim-dns.txt"}"]\n'
        ),
    )
    relay_certificate(inst)
    return CourtSide(inst, port, keys)


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CourtSide]:
    """Retries every half second, gives up after an hour; unsigned court mail refused."""
    side = _instance(
        tmp_path_factory.mktemp("relay"),
        relay="first_retry = 0.5\nmax_retry = 1.0\npoll_interval = 0.2\ntimeout = 10.0",
        failure="refuse",
    )
    side.inst.start()
    try:
        yield side
    finally:
        if side.inst.proc is not None:
            side.inst.stop()


@pytest.fixture(scope="module")
def flagging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CourtSide]:
    """Gives up after 3 seconds; court mail failing DKIM flagged, not refused."""
    side = _instance(
        tmp_path_factory.mktemp("relay-giveup"),
        relay=(
            "first_retry = 0.5\nmax_retry = 1.0\npoll_interval = 0.2\n"
            "give_up_after = 3.0\ntimeout = 5.0"
        ),
        failure="flag",
    )
    side.inst.start()
    try:
        yield side
    finally:
        if side.inst.proc is not None:
            side.inst.stop()


# -- relay -----------------------------------------------------------------------


def _metric(exposition: str, name: str, labels: str = "") -> float:
    """A sample's value in a Prometheus exposition (every node label aside)."""
    for line in exposition.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and labels in sample:
            return float(value)
    raise AssertionError(f"{name} {labels} not exposed")


def test_queued_messages_survive_both_restarts_and_arrive_once_signed(
    refusing: CourtSide,
) -> None:
    inst = refusing.inst
    recorder = Recorder()
    # The endpoint is down: the messages are accepted (250) and queued.
    sent = [send_to_court(inst, f"Pièce n°{n}") for n in range(4)]
    time.sleep(1.5)  # a few attempts fail meanwhile
    assert recorder.received == []
    # What an operator watches: the backlog, its age, the failed attempts.
    metrics = inst.curl_https("/metrics", "admin1").stdout
    assert _metric(metrics, "palais_relay_pending") >= len(sent)
    assert _metric(metrics, "palais_relay_oldest_pending_seconds") >= 1.0
    assert _metric(metrics, "palais_relay_attempts_total", 'outcome="retry"') >= 1
    # The gateway restarts with the queue full.
    assert inst.stop() == 0
    inst.start()
    controller = endpoint(inst, refusing.port, recorder)
    controller.start()
    try:
        assert wait_for(lambda: len(recorder.received) >= len(sent)), recorder.message_ids()
        time.sleep(1.5)  # anything sent twice would have arrived by now
        assert sorted(recorder.message_ids()) == sorted(sent)  # each once
        dns = gateway_dns(inst)
        for sender, rcpts, data in recorder.received:
            assert sender == inst.address("avocat1")
            assert rcpts == [inst.address("court1")]
            # Signed by the gateway: both signatures verify against its published keys.
            assert data.count(b"DKIM-Signature:") == 2
            for index in (0, 1):  # ed25519-sha256, then rsa-sha256
                assert dkim.DKIM(data).verify(idx=index, dnsfunc=dns)
        assert all("Palais relais" in p for p in recorder.peers)  # mutual TLS
        metrics = inst.curl_https("/metrics", "admin1").stdout
        assert _metric(metrics, "palais_relay_attempts_total", 'outcome="sent"') >= len(sent)
        assert wait_for(
            lambda: (
                _metric(inst.curl_https("/metrics", "admin1").stdout, "palais_relay_pending") == 0
            )
        )
    finally:
        controller.stop()
    # Relayed, not kept for IMAP: the court system's INBOX has none of them.
    kept = fetch_all(inst, "court1", "INBOX")
    assert not any(str(message_from_bytes(m)["Message-ID"]) in sent for m in kept)


def test_the_endpoint_restarting_loses_nothing(refusing: CourtSide) -> None:
    inst = refusing.inst
    recorder = Recorder()
    controller = endpoint(inst, refusing.port, recorder)
    controller.start()
    first = send_to_court(inst, "Avant l'arrêt du système")
    try:
        assert wait_for(lambda: first in recorder.message_ids())
    finally:
        controller.stop()
    later = [send_to_court(inst, f"Pendant l'arrêt {n}") for n in range(2)]
    time.sleep(1.0)
    controller = endpoint(inst, refusing.port, recorder)
    controller.start()
    try:
        assert wait_for(lambda: all(m in recorder.message_ids() for m in later))
        time.sleep(1.0)
        assert sorted(recorder.message_ids()) == sorted([first, *later])
    finally:
        controller.stop()


def test_a_gateway_killed_while_sending_sends_again_once(refusing: CourtSide) -> None:
    inst = refusing.inst
    # An endpoint that accepts the connection and never answers: the relay
    # is in the middle of its attempt when the gateway is killed.
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", refusing.port))
    silent.listen()
    silent.settimeout(30)
    try:
        message_id = send_to_court(inst, "Envoi interrompu")
        conn, _ = silent.accept()
        inst.stop(signal.SIGKILL)
        conn.close()
    finally:
        silent.close()
        # Started again, it takes back the row it was sending (its lease would
        # otherwise hold it for [court_relay] lease seconds) and sends it once.
        if inst.proc is None:
            inst.start()
    recorder = Recorder()
    controller = endpoint(inst, refusing.port, recorder)
    controller.start()
    try:
        assert wait_for(lambda: message_id in recorder.message_ids())
        time.sleep(1.0)
        assert recorder.message_ids() == [message_id]
    finally:
        controller.stop()


def test_the_endpoint_s_250_is_the_court_system_s_remise(
    refusing: CourtSide, tmp_path: Path
) -> None:
    inst = refusing.inst
    recorder = Recorder()
    controller = endpoint(inst, refusing.port, recorder)
    controller.start()
    try:
        message_id = send_to_court(inst, "Remise attendue")
        assert wait_for(lambda: _non_delivery(inst, message_id, "remise") is not None)
    finally:
        controller.stop()
    evidence = _non_delivery(inst, message_id, "remise")
    assert evidence is not None
    (event,) = evidence["events"]
    assert [r["address"] for r in event["recipients"]] == [inst.address("court1")]
    _verify_receipt(inst, evidence["_mail"], message_id, tmp_path)


def test_a_permanent_refusal_ends_in_a_verifiable_non_delivery_receipt(
    refusing: CourtSide, tmp_path: Path
) -> None:
    inst = refusing.inst
    recorder = Recorder(
        refuse=lambda data: "550 5.6.0 Dossier inconnu" if b"Refus" in data else None
    )
    controller = endpoint(inst, refusing.port, recorder)
    controller.start()
    try:
        message_id = send_to_court(inst, "Refus attendu")
        assert wait_for(lambda: _non_delivery(inst, message_id) is not None)
    finally:
        controller.stop()
    evidence = _non_delivery(inst, message_id)
    assert evidence is not None
    (event,) = evidence["events"]
    assert "550 5.6.0 Dossier inconnu" in event["reason"]
    assert [r["address"] for r in event["recipients"]] == [inst.address("court1")]
    _verify_receipt(inst, evidence["_mail"], message_id, tmp_path)


def test_giving_up_after_the_configured_time_sends_a_non_delivery_receipt(
    flagging: CourtSide, tmp_path: Path
) -> None:
    inst = flagging.inst
    message_id = send_to_court(inst, "Jamais remis")  # the endpoint never comes up
    assert wait_for(lambda: _non_delivery(inst, message_id) is not None, timeout=30)
    evidence = _non_delivery(inst, message_id)
    assert evidence is not None
    (event,) = evidence["events"]
    assert "tentative" in event["reason"] and "ConnectionRefusedError" in event["reason"]
    _verify_receipt(inst, evidence["_mail"], message_id, tmp_path)


def _non_delivery(
    inst: Instance, message_id: str, code: str = "non-remise"
) -> dict[str, Any] | None:
    """The evidence of the receipt of ``code`` (non-remise) about ``message_id``
    avocat1 holds, if any."""
    for data in fetch_all(inst, "avocat1", RECEIPTS_BOX):
        receipt = message_from_bytes(data)
        if str(receipt["In-Reply-To"]) != message_id:
            continue
        for part in receipt.walk():
            if part.get_content_type() == "application/vnd.palais.evidence+json":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                evidence: dict[str, Any] = json.loads(payload)
                if [e["code"] for e in evidence["events"]] == [code]:
                    evidence["_mail"] = data
                    return evidence
    return None


def _verify_receipt(inst: Instance, receipt: bytes, message_id: str, tmp_path: Path) -> None:
    original = next(
        m
        for m in fetch_all(inst, "avocat1", '"Envoy&AOk-s"')
        if str(message_from_bytes(m)["Message-ID"]) == message_id
    )
    (tmp_path / "accuse.eml").write_bytes(receipt)
    (tmp_path / "original.eml").write_bytes(original)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "palais",
            "verify-receipt",
            str(tmp_path / "accuse.eml"),
            "--message",
            str(tmp_path / "original.eml"),
            "--trust",
            str(inst.root / str(inst.demo.get("evidence_ca", "pki/ca.pem"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- DKIM on what court systems push ---------------------------------------------


def _signed(side: CourtSide, data: bytes) -> bytes:
    from palais.pki.dkim import DkimKeys

    keys = DkimKeys.load(side.court_keys, COURT_DOMAIN, "portalis")
    return sign_outgoing(data, keys)


def _stored(inst: Instance, subject: str) -> bytes | None:
    for data in fetch_all(inst, "greffier1", "INBOX"):  # the dossier's service
        if subject.encode() in data:
            return data
    return None


def _verdicts(inst: Instance, subject: str) -> list[str]:
    """The Authentication-Results fields of the stored message, whitespace folded."""
    stored = _stored(inst, subject)
    assert stored is not None
    results: Any = message_from_bytes(stored).get_all("Authentication-Results")
    return [" ".join(str(r).split()) for r in results]


def test_a_court_push_with_a_valid_signature_is_accepted(refusing: CourtSide) -> None:
    inst = refusing.inst
    code, _ = court_push(inst, _signed(refusing, court_message(inst, "Audience signee")))
    assert code == 250
    stored = _stored(inst, "Audience signee")
    assert stored is not None
    assert b"dkim=pass header.d=" + COURT_DOMAIN.encode() in stored


def test_a_court_push_failing_dkim_is_refused(refusing: CourtSide) -> None:
    inst = refusing.inst
    tampered = _signed(refusing, court_message(inst, "Audience alteree")).replace(
        b"12 janvier", b"13 janvier"
    )
    code, text = court_push(inst, tampered)
    assert code == 550 and text.startswith("5.7.1") and "DKIM" in text
    code, text = court_push(inst, court_message(inst, "Audience sans signature"))
    assert code == 550 and "DKIM" in text
    assert _stored(inst, "Audience alt") is None
    assert _stored(inst, "Audience sans signature") is None


def test_a_court_push_failing_dkim_is_flagged_under_the_other_setting(
    flagging: CourtSide,
) -> None:
    inst = flagging.inst
    tampered = _signed(flagging, court_message(inst, "Audience marquee")).replace(
        b"12 janvier", b"13 janvier"
    )
    # A forged verdict under the gateway's own name is dropped.
    forged = b"Authentication-Results: localhost; dkim=pass\r\n" + tampered
    code, _ = court_push(inst, forged)
    assert code == 250
    assert _verdicts(inst, "Audience marquee") == [f"localhost; dkim=fail header.d={COURT_DOMAIN}"]


def test_a_court_system_s_own_dkim_setting_replaces_the_default(tmp_path: Path) -> None:
    """Court mail is refused unsigned by default; court1, being connected,
    has "flag" of its own: its unsigned push is stored, marked dkim=none."""
    keys = tmp_path / "court-dkim"
    keys.mkdir()
    generate_dkim_keys(keys, COURT_DOMAIN, "portalis")
    inst = create_instance(
        tmp_path / "i",
        extra_config=(f'[court_dkim]\nfailure = "refuse"\nrecords = ["{keys / "dkim-dns.txt"}"]\n'),
    )
    # court1's address is known once the instance is made (its demo.json).
    with (inst.root / "palais.toml").open("a", encoding="utf-8") as f:
        f.write(f'[court_dkim.systems]\n"{inst.address("court1")}" = "flag"\n')
    inst.start()
    try:
        code, _ = court_push(inst, court_message(inst, "Audience non signee"))
        assert code == 250
        assert _verdicts(inst, "Audience non signee") == [
            f"localhost; dkim=none header.d={COURT_DOMAIN}"
        ]
    finally:
        inst.stop()


# -- settings that cannot be used stop the start, named ------------------------------


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (
            '[court_relay.endpoints]\n"portalis@x.test" = "nowhere"\n',
            "[court_relay] endpoints: endpoint of portalis@x.test: expected host:port",
        ),
        (
            '[court_relay.endpoints]\n"portalis@x.test" = "127.0.0.1:2525"\n',
            "[court_relay] client_certificate: no such file",
        ),
        ('[court_dkim]\nfailure = "refuse"\n', '[court_dkim] failure = "refuse" needs records'),
        (
            '[court_dkim]\nfailure = "flag"\nrecords = ["court.txt"]\n',
            "[court_dkim] records: ",
        ),
    ],
)
def test_unusable_court_settings_stop_the_start_with_their_name(
    tmp_path: Path, config: str, said: str
) -> None:
    inst = create_instance(tmp_path / "i", extra_config=config)
    (inst.root / "court.txt").write_text("this is no zone line\n")
    done = inst.serve_to_the_end()
    assert done.returncode == 1
    assert f"palais serve: cannot start: {said}" in done.stderr, done.stderr
