"""`palais verify-receipt` on receipts a real instance issued and a client fetched.

avocat1 sends a message with an attachment over SMTPS, greffier1 reads it
over IMAP (the read receipt), avocat1 fetches both receipts from its
Accusés de réception and the original from Envoyés, as a mail client would;
the command checks each, and refuses each kind of tampering with its status.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.instance import Instance, create_instance

ATTACHMENT = b"%PDF-1.4\n% conclusions d'appel\n" + bytes(range(256)) * 4


@dataclass
class Fetched:
    inst: Instance
    dir: Path
    original: Path
    receipts: list[Path]

    @property
    def evidence_ca(self) -> Path:
        return self.inst.root / str(self.inst.demo.get("evidence_ca", "pki/ca.pem"))


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fetched]:
    root = tmp_path_factory.mktemp("receipts-cli")
    inst = create_instance(root / "i")
    inst.start()
    try:
        original, receipts = inst.exchange_with_receipts(
            "Conclusions d'appel",
            "Bonjour,\nveuillez trouver nos conclusions.\n",
            ATTACHMENT,
            "conclusions.pdf",
        )
        assert len(receipts) == 2, "a deposit-and-delivery receipt and a read receipt"
        (root / "original.eml").write_bytes(original)
        paths = []
        for n, data in enumerate(receipts, start=1):
            path = root / f"accuse-{n}.eml"
            path.write_bytes(data)
            paths.append(path)
        yield Fetched(inst, root, root / "original.eml", paths)
    finally:
        inst.stop()


def _verify(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palais", "verify-receipt", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_each_receipt_verifies_with_its_original(fetched: Fetched) -> None:
    for receipt in fetched.receipts:
        done = _verify(receipt, "--message", fetched.original, "--trust", fetched.evidence_ca)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Accusé de réception VALIDE" in done.stdout
        assert "Receipt VALID" in done.stdout
        assert fetched.inst.dossier["number"] in done.stdout
        assert "conclusions.pdf" in done.stdout
        assert "✗" not in done.stdout


def test_json_verdict(fetched: Fetched) -> None:
    kinds = set()
    for receipt in fetched.receipts:
        done = _verify(
            receipt, "--message", fetched.original, "--trust", fetched.evidence_ca, "--json"
        )
        assert done.returncode == 0, done.stderr
        verdict = json.loads(done.stdout)
        assert verdict["ok"] is True and verdict["exit_status"] == 0
        outcomes = {s["code"]: s["outcome"] for s in verdict["steps"]}
        assert outcomes["message"] == outcomes["attachments"] == "passed"
        assert outcomes["log"] == "skipped"
        evidence = verdict["evidence"]
        assert evidence["dossier"] == fetched.inst.dossier["number"]
        (attachment,) = evidence["message"]["attachments"]
        assert attachment["name"] == "conclusions.pdf"
        assert attachment["size"] == len(ATTACHMENT)
        kinds.add(tuple(e["code"] for e in evidence["events"]))
    assert kinds == {("depot", "remise"), ("premiere-lecture",)}


def test_the_trust_anchor_comes_from_the_environment(fetched: Fetched) -> None:
    env = dict(os.environ, PALAIS_EVIDENCE_CA=str(fetched.evidence_ca))
    assert _verify(fetched.receipts[0], env=env).returncode == 0
    env.pop("PALAIS_EVIDENCE_CA")
    done = _verify(fetched.receipts[0], env=env)
    assert done.returncode == 2
    assert "--trust" in done.stderr and "PALAIS_EVIDENCE_CA" in done.stderr


def test_a_changed_byte_of_the_original(fetched: Fetched, tmp_path: Path) -> None:
    data = fetched.original.read_bytes()
    at = data.index(b"veuillez")
    changed = tmp_path / "original.eml"
    changed.write_bytes(data[:at] + b"V" + data[at + 1 :])
    for receipt in fetched.receipts:
        done = _verify(receipt, "--message", changed, "--trust", fetched.evidence_ca)
        assert done.returncode == 6, done.stdout
        assert "NON VALIDE (statut 6)" in done.stdout


def test_a_changed_attachment(fetched: Fetched, tmp_path: Path) -> None:
    data = fetched.original.read_bytes()
    # The attachment's base64: the first line of it, one character changed
    # (still base64, another decoded byte).
    first_line = base64.b64encode(ATTACHMENT)[:76]
    at = data.index(first_line) + 20
    replacement = b"A" if data[at : at + 1] != b"A" else b"B"
    changed = tmp_path / "original.eml"
    changed.write_bytes(data[:at] + replacement + data[at + 1 :])
    for receipt in fetched.receipts:
        done = _verify(receipt, "--message", changed, "--trust", fetched.evidence_ca, "--json")
        assert done.returncode == 7, done.stdout
        steps = {s["code"]: s for s in json.loads(done.stdout)["steps"]}
        assert steps["attachments"]["outcome"] == "failed"
        assert "conclusions.pdf" in steps["attachments"]["en"]


def test_a_wrong_anchor(fetched: Fetched) -> None:
    # Another CA of the instance (a card CA): not the one of the evidence key.
    others = sorted((fetched.inst.root / "pki" / "anchors").glob("*.pem"))
    assert others
    for receipt in fetched.receipts:
        done = _verify(receipt, "--message", fetched.original, "--trust", others[0])
        assert done.returncode == 5, done.stdout


def test_an_unreadable_receipt_file(fetched: Fetched) -> None:
    done = _verify(fetched.dir / "absent.eml", "--trust", fetched.evidence_ca)
    assert done.returncode == 2
    assert "absent.eml" in done.stderr


def test_a_mail_that_is_not_a_receipt(fetched: Fetched) -> None:
    done = _verify(fetched.original, "--trust", fetched.evidence_ca)
    assert done.returncode == 3, done.stdout


def test_openssl_accepts_each_receipt(fetched: Fetched) -> None:
    for receipt in fetched.receipts:
        checked = subprocess.run(
            [
                "openssl",
                "smime",
                "-verify",
                "-in",
                str(receipt),
                "-CAfile",
                str(fetched.evidence_ca),
                "-out",
                "/dev/null",
            ],
            capture_output=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stderr
