"""E-délégation on a running gateway, with real clients over mutual TLS.

A lawyer (avocat1) delegates dossier 2025-0000138 to their collaborateur
(collaborateur1): to read first (the delegate sees the lawyer's dossier
boxes under "Délégations/<lawyer>/", read-only, and may not send for the
lawyer), then to write (the delegate sends for the lawyer with From: the
lawyer and Sender: themself; the clerk receives exactly that; the lawyer's
Envoyés files it, the receipt names the delegate, the audit log says "X for
Y"). Revoked over HTTPS with the lawyer's card (curl), then again by the
CLI after a grant over HTTPS, the delegate is refused on IMAP and SMTP
without a restart. Every CLI and API error says what is wrong.
"""

from __future__ import annotations

import email
import imaplib
import io
import json
import re
import smtplib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest

from tests.e2e.instance import Instance, create_instance

LAWYER = "avocat1"
DELEGATE = "collaborateur1"
# "Délégations" in modified UTF-7 (RFC 3501 5.1.3), as imaplib sends and reads it.
DELEGATIONS_UTF7 = "D&AOk-l&AOk-gations"


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


def api(
    inst: Instance, who: str, method: str, path: str, body: object | None = None
) -> tuple[int, Any]:
    """curl on /api/delegations with ``who``'s card: (status, JSON answer)."""
    args = [
        "curl",
        "-sS",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        "--cacert",
        str(inst.ca),
        "--cert",
        str(inst.cert(who)),
        "--key",
        str(inst.key(who)),
    ]
    if body is not None:
        data = body if isinstance(body, str) else json.dumps(body)
        args += ["-H", "content-type: application/json", "--data-binary", data]
    done = subprocess.run(
        [*args, f"https://localhost:{inst.port('https')}{path}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(text) if text.strip() else None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = create_instance(tmp_path_factory.mktemp("delegation") / "instance")
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


def number(inst: Instance) -> str:
    return str(inst.dossier["number"])


def delegated_box(inst: Instance, leaf: str) -> str:
    """The delegate's (quoted, mUTF-7) name for the lawyer's dossier box ``leaf``."""
    return f'"{DELEGATIONS_UTF7}/{inst.address(LAWYER)}/Dossiers/{number(inst)}/{leaf}"'


def message(inst: Instance, subject: str, *, sender: str | None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = inst.address(LAWYER)
    if sender is not None:
        msg["Sender"] = sender
    msg["To"] = inst.dossier["address"]
    msg["Subject"] = f"[{number(inst)}] {subject}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    msg.set_content("Conclusions jointes.")
    return msg


def send_as_delegate(inst: Instance, msg: EmailMessage, mail_from: str | None = None) -> None:
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context(DELEGATE), timeout=10
    ) as s:
        if mail_from is None:
            # smtplib's envelope sender is the Sender field: the delegate's own.
            assert s.send_message(msg) == {}
        else:
            assert s.sendmail(mail_from, [inst.dossier["address"]], msg.as_bytes()) == {}


def smtp_refusal(inst: Instance, msg: EmailMessage, mail_from: str | None = None) -> str:
    """The 5xx a delegate's send gets (with its enhanced code), or "" if accepted."""
    try:
        send_as_delegate(inst, msg, mail_from)
    except smtplib.SMTPSenderRefused as e:
        return f"{e.smtp_code} {e.smtp_error.decode()}"
    except smtplib.SMTPRecipientsRefused as e:
        ((code, text),) = e.recipients.values()
        return f"{code} {text.decode()}"
    except smtplib.SMTPDataError as e:
        error = e.smtp_error
        return f"{e.smtp_code} {error.decode() if isinstance(error, bytes) else error}"
    return ""


def mailbox_names(inst: Instance, who: str) -> list[str]:
    imap = inst.imap(who)
    try:
        status, lines = imap.list()
        assert status == "OK"
        return [line.decode() for line in lines if isinstance(line, bytes)]
    finally:
        imap.logout()


def sees_delegated_boxes(inst: Instance) -> bool:
    return any(DELEGATIONS_UTF7 in line for line in mailbox_names(inst, DELEGATE))


def fetch_all(imap: imaplib.IMAP4_SSL, box: str) -> list[bytes]:
    status, _ = imap.select(box, readonly=True)
    assert status == "OK", box
    _, data = imap.fetch("1:*", "(BODY.PEEK[])")
    return [item[1] for item in data if isinstance(item, tuple)]


def evidence_of(receipt: bytes) -> dict[str, Any]:
    parsed = email.message_from_bytes(receipt, policy=default_policy)
    for part in parsed.walk():
        if part.get_content_type() == "application/vnd.palais.evidence+json":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found: dict[str, Any] = json.loads(payload)
            return found
    raise AssertionError("no evidence in the receipt")


def audit(inst: Instance, action: str) -> list[dict[str, Any]]:
    return inst.admin_json("audit", "--action", action)  # in this process: it is read back


# -- the CLI's refusals ------------------------------------------------------------


def test_every_cli_error_exits_non_zero_naming_what_is_wrong(gateway: Instance) -> None:
    lawyer, delegate, n = gateway.address(LAWYER), gateway.address(DELEGATE), number(gateway)
    cases = [
        (["grant", "--from", "nobody@avocats.palais.test", "--to", delegate], "no account"),
        (["grant", "--from", lawyer, "--to", "nobody@avocats.palais.test"], "no account"),
        (["grant", "--from", lawyer, "--to", lawyer], "cannot delegate to themself"),
        (["grant", "--from", lawyer, "--to", delegate, "--dossier", "2099-0000001"], "no dossier"),
        (["grant", "--from", lawyer, "--to", delegate, "--dossier", "138"], "not a dossier"),
        (
            ["grant", "--from", lawyer, "--to", gateway.address("greffier1")],
            "only to a collaborateur or another avocat",
        ),
        (["grant", "--from", delegate, "--to", lawyer], "only a lawyer"),
        (
            ["grant", "--from", gateway.address("avocat3"), "--to", delegate, "--dossier", n],
            "takes no part in dossier",
        ),
        (["revoke", "--from", lawyer, "--to", delegate], "has delegated nothing"),
        (["list", "--from", "nobody@avocats.palais.test"], "no account"),
    ]
    for args, wanted in cases:
        status, err = gateway.admin_here("delegation", *args)
        assert status == 1, (args, err)
        assert wanted in err and err.startswith("palais admin: "), (args, err)
    status, err = gateway.admin_here(
        "delegation", "grant", "--from", lawyer, "--to", delegate, "--rights", "x"
    )
    assert status == 2 and "--rights" in err
    status, err = gateway.admin_here("delegation", "grant", "--from", lawyer)
    assert status == 2 and "--to" in err
    # And as an operator types it, in a process of its own.
    done = gateway.admin("delegation", "grant", "--from", lawyer, "--to", lawyer)
    assert done.returncode == 1 and "cannot delegate to themself" in done.stderr
    assert audit(gateway, "delegation-granted") == []


# -- read, then write, then revoked ---------------------------------------------


def test_a_read_delegation_shows_the_dossier_read_only_and_sends_nothing(
    gateway: Instance,
) -> None:
    lawyer, delegate, n = gateway.address(LAWYER), gateway.address(DELEGATE), number(gateway)
    gateway.submit("avant la delegation", who=LAWYER)
    done = gateway.admin("delegation", "grant", "--from", lawyer, "--to", delegate, "--dossier", n,
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (granted,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert granted["from"] == lawyer and granted["to"] == delegate
    assert granted["rights"] == "read" and granted["dossiers"] == [n]
    (event,) = audit(gateway, "delegation-granted")
    assert event["reason"] == f"{delegate} for {lawyer}"

    assert wait_for(lambda: sees_delegated_boxes(gateway))
    names = mailbox_names(gateway, DELEGATE)
    assert any(f"Dossiers/{n}/Envoy&AOk-s" in line and lawyer in line for line in names)
    # Only dossiers are delegated, never the lawyer's global views.
    assert not any(re.search(rf"{re.escape(lawyer)}/INBOX", line) for line in names)

    imap = gateway.imap(DELEGATE)
    try:
        # SELECT answers [READ-ONLY] (imaplib raises on it; the box is selected).
        with pytest.raises(imaplib.IMAP4.readonly):
            imap.select(delegated_box(gateway, "Envoy&AOk-s"))
        # imaplib then refuses every command of a SELECT it thinks writable:
        # forget the code, to try what the server answers.
        del imap.untagged_responses["READ-ONLY"]
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert any(b"avant la d" in item[1] for item in data if isinstance(item, tuple))
        status, answer = imap.store("1", "+FLAGS", "(\\Flagged)")
        assert status == "NO" and b"NOPERM" in answer[0], answer
        status, answer = imap.expunge()
        assert status == "NO" and b"NOPERM" in answer[0], answer
        draft = b"From: x@y\r\nSubject: [2025-0000138] brouillon\r\n\r\ncorps\r\n"
        status, answer = imap.append(delegated_box(gateway, "Brouillons"), None, None, draft)
        assert status == "NO" and b"NOPERM" in answer[0], answer
        # Another lawyer's boxes stay out of reach.
        other = f'"{DELEGATIONS_UTF7}/{gateway.address("avocat2")}/Dossiers/{n}/Re&AOc-us"'
        assert imap.select(other)[0] == "NO"
    finally:
        imap.logout()

    refused = smtp_refusal(gateway, message(gateway, "lecture seule", sender=delegate))
    assert refused.startswith("550 5.7.1") and "reading only" in refused, refused
    refused = smtp_refusal(gateway, message(gateway, "lecture seule", sender=None), lawyer)
    assert refused.startswith("550 5.7.1") and "reading only" in refused, refused


def test_a_write_delegate_sends_for_the_lawyer_with_from_and_sender(gateway: Instance) -> None:
    lawyer, delegate, n = gateway.address(LAWYER), gateway.address(DELEGATE), number(gateway)
    done = gateway.admin("delegation", "grant", "--from", lawyer, "--to", delegate, "--dossier", n,
        "--rights", "write",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The envelope the delegate's own (smtplib takes the Sender), From the lawyer...
    first = message(gateway, "pour le compte (enveloppe du délégué)", sender=delegate)
    # ...or the envelope the lawyer's and no Sender field: the gateway adds it.
    second = message(gateway, "pour le compte (enveloppe de l'avocat)", sender=None)
    assert wait_for(lambda: smtp_refusal(gateway, first) == "")
    send_as_delegate(gateway, second, mail_from=lawyer)

    clerk = gateway.imap("greffier1")
    try:
        received = fetch_all(clerk, "INBOX")
    finally:
        clerk.logout()
    for msg in (first, second):
        (got,) = [m for m in received if str(msg["Message-ID"]).encode() in m]
        parsed = email.message_from_bytes(got, policy=default_policy)
        assert parsed["From"].addresses[0].addr_spec == lawyer
        assert parsed["Sender"].addresses[0].addr_spec == delegate
        assert len(parsed.get_all("Sender") or []) == 1

    owner = gateway.imap(LAWYER)
    try:
        sent = fetch_all(owner, '"Envoy&AOk-s"')
        receipts = fetch_all(owner, '"Accus&AOk-s de r&AOk-ception"')
    finally:
        owner.logout()
    assert all(any(str(m["Message-ID"]).encode() in s for s in sent) for m in (first, second))
    proofs = [evidence_of(r) for r in receipts]
    mine = [p for p in proofs if p["message"]["message_id"] == str(first["Message-ID"])]
    (deposit,) = mine
    assert deposit["sender"]["address"] == lawyer
    assert deposit["delegate"]["address"] == delegate
    assert deposit["delegate"]["authentication"] == "tls-client-certificate"

    acts = audit(gateway, "acted-for")
    sends = [a for a in acts if a["detail"]["act"] == "send"]
    assert len(sends) == 2
    assert all(a["reason"] == f"{delegate} for {lawyer}" for a in sends)
    assert all(a["actor"] == delegate and a["subject"] == lawyer for a in sends)

    # With "write" the delegate also works the lawyer's boxes, each act audited.
    imap = gateway.imap(DELEGATE)
    try:
        assert imap.select(delegated_box(gateway, "Envoy&AOk-s"))[0] == "OK"
        status, _ = imap.store("1", "+FLAGS", "(\\Flagged)")
        assert status == "OK"
    finally:
        imap.logout()
    assert any(a["detail"]["act"] == "flags" for a in audit(gateway, "acted-for"))


def test_a_from_naming_another_lawyer_without_delegation_is_refused(gateway: Instance) -> None:
    other = message(gateway, "usurpation", sender=gateway.address(DELEGATE))
    other.replace_header("From", gateway.address("avocat2"))
    refused = smtp_refusal(gateway, other)
    assert refused.startswith("550 5.7.1"), refused
    refused = smtp_refusal(gateway, message(gateway, "x", sender=None), gateway.address("avocat2"))
    assert refused.startswith("550 5.7.1") and "not delegated" in refused, refused


def test_revoked_over_https_then_by_the_cli_the_delegate_is_refused(gateway: Instance) -> None:
    lawyer, delegate, n = gateway.address(LAWYER), gateway.address(DELEGATE), number(gateway)
    status, listed = api(gateway, LAWYER, "GET", "/api/delegations")
    assert status == 200
    assert [(d["to"], d["rights"]) for d in listed["granted"]] == [(delegate, "write")]
    status, held = api(gateway, DELEGATE, "GET", "/api/delegations")
    assert status == 200 and [d["from"] for d in held["held"]] == [lawyer]

    # Only a lawyer grants, only their own, and bad input is named.
    status, answer = api(gateway, DELEGATE, "POST", "/api/delegations", {"to": lawyer})
    assert status == 403 and "only a lawyer" in answer["error"]
    status, answer = api(gateway, LAWYER, "POST", "/api/delegations", {"to": lawyer})
    assert status == 422 and "themself" in answer["error"]
    status, answer = api(gateway, LAWYER, "POST", "/api/delegations", "{not json")
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = api(
        gateway, LAWYER, "POST", "/api/delegations", {"to": delegate, "rights": "all"}
    )
    assert status == 400 and "rights" in answer["error"]
    status, answer = api(
        gateway, LAWYER, "DELETE", f"/api/delegations/{gateway.address('avocat2')}"
    )
    assert status == 422 and "delegated nothing" in answer["error"]

    status, answer = api(gateway, LAWYER, "DELETE", f"/api/delegations/{delegate}")
    assert status == 200 and [d["dossier"] for d in answer["revoked"]] == [n]
    (revoked,) = audit(gateway, "delegation-revoked")
    assert revoked["actor"] == lawyer and revoked["reason"] == f"{delegate} for {lawyer}"
    assert wait_for(lambda: not sees_delegated_boxes(gateway))
    imap = gateway.imap(DELEGATE)
    try:
        assert imap.select(delegated_box(gateway, "Envoy&AOk-s"))[0] == "NO"
    finally:
        imap.logout()
    refused = smtp_refusal(gateway, message(gateway, "après", sender=delegate))
    assert refused.startswith("550 5.7.1"), refused

    # Granted again by the lawyer over HTTPS (all dossiers, write), revoked by the CLI.
    status, answer = api(
        gateway, LAWYER, "POST", "/api/delegations", {"to": delegate, "rights": "write"}
    )
    assert status == 201 and answer["granted"][0]["dossiers"] == "all"
    assert wait_for(lambda: smtp_refusal(gateway, message(gateway, "re", sender=delegate)) == "")
    # One dossier granted and revoked on top: the grant of all dossiers stays, and says so.
    status, err = gateway.admin_here(
        "delegation", "grant", "--from", lawyer, "--to", delegate, "--dossier", n
    )
    assert status == 0, err
    out = io.StringIO()
    status, err = gateway.admin_here(
        "delegation", "revoke", "--from", lawyer, "--to", delegate, "--dossier", n, out=out
    )
    assert status == 0 and "still holds all dossiers" in out.getvalue(), (err, out.getvalue())
    imap = gateway.imap(DELEGATE)  # a session open before the revocation
    try:
        assert imap.select(delegated_box(gateway, "Envoy&AOk-s"))[0] == "OK"
        done = gateway.admin("delegation", "revoke", "--from", lawyer, "--to", delegate)
        assert done.returncode == 0, done.stderr
        assert "revoked" in done.stdout
        # The selected box goes too (within the cache's few seconds): NO to the next command.
        assert wait_for(
            lambda: imap.noop()[0] == "OK" and imap.fetch("1:*", "(BODY.PEEK[HEADER])")[0] == "NO"
        )
    finally:
        imap.logout()
    assert wait_for(lambda: smtp_refusal(gateway, message(gateway, "après", sender=delegate)) != "")
    assert not sees_delegated_boxes(gateway)
    assert gateway.admin("delegation", "list", "--from", lawyer).stdout.strip() == (
        "no delegation in force"
    )
