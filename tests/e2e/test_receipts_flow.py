"""Receipts over the real protocols: who gets which, and exactly one read receipt
when two sessions of one service read the same messages at once."""

from __future__ import annotations

import email
import imaplib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest

from tests.e2e.instance import Instance, create_instance

ACCUSES = '"Accus&AOk-s de r&AOk-ception"'


@pytest.fixture(scope="module")
def palais(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = create_instance(tmp_path_factory.mktemp("receipts") / "palais")
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def _events(inst: Instance) -> list[tuple[str, int]]:
    with sqlite3.connect(inst.root / "palais.db") as db:
        return [(str(e), int(a)) for e, a in db.execute("SELECT events, about FROM evidence_log")]


def _count(imap: imaplib.IMAP4_SSL, box: str) -> int:
    typ, data = imap.status(box, "(MESSAGES)")
    assert typ == "OK"
    raw = data[0]
    assert isinstance(raw, bytes)
    return int(raw.rsplit(b"MESSAGES ", 1)[1].rstrip(b")"))


def test_two_sessions_of_a_service_reading_at_once_cause_one_read_receipt_each(
    palais: Instance,
) -> None:
    before = len(_events(palais))
    for n in range(12):
        palais.submit(f"Pièce {n}")
    readers = [palais.imap("greffier1"), palais.imap("greffier1")]
    for imap in readers:
        assert imap.select("INBOX")[0] == "OK"
    start = threading.Barrier(len(readers))
    failures: list[BaseException] = []

    def read(imap: imaplib.IMAP4_SSL) -> None:
        try:
            start.wait()
            typ, _ = imap.fetch("1:*", "(BODY[])")  # sets \Seen: the first reading
            assert typ == "OK"
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=read, args=(imap,)) for imap in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for imap in readers:
        imap.logout()
    assert failures == []
    events = _events(palais)[before:]
    reads = [about for kind, about in events if kind == "premiere-lecture"]
    deposits = [about for kind, about in events if kind == "depot,remise"]
    assert len(deposits) == 12
    assert sorted(reads) == sorted(deposits)  # one each, none twice


def test_the_sender_finds_signed_receipts_in_its_boxes_and_the_reader_keeps_a_copy(
    palais: Instance, tmp_path: Path
) -> None:
    sender = palais.imap("avocat1")
    number = palais.dossier["number"]
    in_dossier = f'"Dossiers/{number}/Accus&AOk-s de r&AOk-ception"'
    before = (_count(sender, ACCUSES), _count(sender, in_dossier))
    palais.submit("Demande de renvoi")
    reader = palais.imap("greffier1")
    reader_before = _count(reader, ACCUSES)
    reader.select("INBOX")
    typ, found = reader.search(None, "UNSEEN")
    assert typ == "OK" and found[0]
    newest = found[0].split()[-1]
    reader.fetch(newest, "(BODY[])")
    deadline = time.monotonic() + 10
    while _count(sender, ACCUSES) < before[0] + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (_count(sender, ACCUSES), _count(sender, in_dossier)) == (before[0] + 2, before[1] + 2)
    assert _count(reader, ACCUSES) == reader_before + 1
    reader.logout()

    sender.select(ACCUSES, readonly=True)
    typ, data = sender.fetch(f"{before[0] + 1}:*", "(BODY.PEEK[])")
    assert typ == "OK"
    receipts = [part[1] for part in data if isinstance(part, tuple)]
    assert len(receipts) == 2
    kinds = []
    for n, raw in enumerate(receipts):
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert parsed.get_content_type() == "multipart/signed"
        assert str(parsed["Subject"]).startswith(f"[{number}] Accusé de réception")
        parts = parsed.get_payload()
        assert isinstance(parts, list)
        report = parts[0]
        assert isinstance(report, email.message.Message)
        kinds.append(report.get_param("report-type"))
        evidence = next(
            p
            for p in report.walk()
            if p.get_content_type() == "application/vnd.palais.evidence+json"
        )
        payload = evidence.get_payload(decode=True)
        assert isinstance(payload, bytes)
        document = json.loads(payload)
        assert document["dossier"] == number
        path = tmp_path / f"receipt-{n}.eml"
        path.write_bytes(raw)
        checked = subprocess.run(
            [
                "openssl",
                "cms",
                "-verify",
                "-in",
                str(path),
                "-CAfile",
                str(palais.root / palais.demo["evidence_ca"]),
                "-out",
                "/dev/null",
            ],
            capture_output=True,
        )
        assert checked.returncode == 0, checked.stderr
    # The read receipt carries an RFC 8098 disposition notification.
    assert kinds == ["vnd.palais.evidence+json", "disposition-notification"]
    sender.logout()


def test_the_printable_receipt_is_for_its_holders_only(palais: Instance, tmp_path: Path) -> None:
    with sqlite3.connect(palais.root / "palais.db") as db:
        (evidence_id,) = db.execute(
            "SELECT evidence_id FROM evidence_log ORDER BY position LIMIT 1"
        ).fetchone()
    path = f"/accuses/{evidence_id}.pdf"
    # Another lawyer of the same dossier does not hold the receipt; nor does anyone anonymous.
    assert palais.curl_https(path, "avocat2").stdout.endswith("\n404")
    assert palais.curl_https(path).stdout.endswith("\n401")
    assert palais.curl_https("/accuses/nothing.pdf", "avocat1").stdout.endswith("\n404")
    pdf = tmp_path / "accuse.pdf"
    fetched = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            str(pdf),
            "-w",
            "%{http_code} %{content_type}",
            "--cacert",
            str(palais.ca),
            "--cert",
            str(palais.cert("avocat1")),
            "--key",
            str(palais.key("avocat1")),
            f"https://localhost:{palais.port('https')}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fetched.stdout == "200 application/pdf", (fetched.stdout, fetched.stderr)
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True)
    assert palais.dossier["number"] in text.stdout


def test_the_evidence_log_exports_and_verifies_and_a_removed_leaf_is_caught(
    palais: Instance, tmp_path: Path
) -> None:
    palais.submit("Pour le journal")
    out = tmp_path / "journal"
    exported = subprocess.run(
        [sys.executable, "-m", "palais", "evidence", "export", str(out), "-d", str(palais.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    anchor = str(palais.root / palais.demo["evidence_ca"])

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "palais", "evidence", "verify", str(out), "--trust", anchor],
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = verify()
    assert good.returncode == 0, good.stdout + good.stderr
    leaves = (out / "leaves.jsonl").read_bytes().splitlines(keepends=True)
    assert len(leaves) >= 3
    (out / "leaves.jsonl").write_bytes(b"".join(leaves[:1] + leaves[2:]))
    removed = verify()
    assert removed.returncode == 3, removed.stdout + removed.stderr
