"""`palais admin` on a real instance: account commands, the audit log, and what a
running gateway makes of them (a deactivated account refused within seconds,
every refusal of every listener in the audit log once).

The commands run as an operator would run them: a separate process, through
``python -m palais admin`` (the ``admin`` group of the ``palais`` command);
the JSON listings the tests read back (and poll) run in the test's process.
"""

from __future__ import annotations

import imaplib
import io
import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.instance import Instance, create_instance

REFUSED = (ssl.SSLError, ConnectionError, smtplib.SMTPException, EOFError, imaplib.IMAP4.error)


def admin(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palais", "admin", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def admin_json(inst: Instance, *args: str) -> list[dict[str, Any]]:
    """What ``palais admin ARGS --json`` prints, run in this process: the tests
    poll the audit log with it, and a process each took seconds."""
    out = io.StringIO()
    status, err = inst.admin_here(*args, "--json", out=out)
    assert status == 0, err
    return [json.loads(line) for line in out.getvalue().splitlines()]


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """A gateway of its own: these tests deactivate accounts."""
    inst = create_instance(tmp_path_factory.mktemp("admin") / "instance")
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    """An instance that is never started: the commands need only its directory."""
    return create_instance(tmp_path_factory.mktemp("admin-idle") / "instance")


# -- account commands -------------------------------------------------------------


def test_account_list_and_show(idle: Instance) -> None:
    accounts = admin_json(idle, "account", "list")
    addresses = {a["address"] for a in accounts}
    assert idle.address("avocat1") in addresses and idle.address("greffier1") in addresses
    assert all(a["active"] for a in accounts)
    clerks = admin_json(idle, "account", "list", "--role", "greffier")
    assert [c["address"] for c in clerks] == [idle.address("greffier1")]
    assert clerks[0]["service"] == idle.dossier["service_address"]

    [shown] = admin_json(idle, "account", "show", idle.address("avocat1").upper())
    assert shown["address"] == idle.address("avocat1")
    assert shown["role"] == "avocat" and shown["active"] is True
    assert len(shown["certificates"]) == 1
    assert len(shown["certificates"][0]["fingerprint"]) == 64
    assert [d["number"] for d in shown["dossiers"]] == [idle.dossier["number"]]
    # The clerk takes part through the dossier's service.
    [clerk] = admin_json(idle, "account", "show", idle.address("greffier1"))
    assert [d["number"] for d in clerk["dossiers"]] == [idle.dossier["number"]]

    text = admin("account", "show", idle.address("avocat1"), "-d", str(idle.root))
    assert text.returncode == 0
    assert shown["certificates"][0]["fingerprint"] in text.stdout
    assert idle.dossier["number"] in text.stdout


def test_deactivate_and_reactivate_write_the_audit(idle: Instance) -> None:
    who = idle.address("avocat2")
    done = admin("-d", str(idle.root), "account", "deactivate", who, "--reason", "radié")
    assert done.returncode == 0, done.stderr
    assert who in done.stdout
    inactive = admin_json(idle, "account", "list", "--inactive")
    assert [a["address"] for a in inactive] == [who]
    assert who not in {a["address"] for a in admin_json(idle, "account", "list")}

    again = admin("account", "deactivate", who, "--reason", "x", "-d", str(idle.root))
    assert again.returncode == 1
    assert again.stderr.startswith("palais admin: ") and "already inactive" in again.stderr

    assert admin("account", "reactivate", who, "-d", str(idle.root)).returncode == 0
    events = admin_json(idle, "audit", "--account", who)
    assert [(e["action"], e["subject"], e["reason"]) for e in events] == [
        ("account-deactivated", who, "radié"),
        ("account-reactivated", who, None),
    ]
    assert all(e["actor"].startswith("operator:") for e in events)
    deactivated = admin_json(idle, "audit", "--action", "account-deactivated")
    assert [e["subject"] for e in deactivated] == [who]
    # --since: a date after every event selects none; text output: one line each.
    assert admin_json(idle, "audit", "--since", "2999-01-01") == []
    text = admin("audit", "--account", who, "-d", str(idle.root))
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2
    assert "account-deactivated" in text.stdout and "radié" in text.stdout


def test_the_instance_comes_from_palais_home_or_the_current_directory(idle: Instance) -> None:
    env = {**os.environ, "PALAIS_HOME": str(idle.root)}
    by_env = admin("account", "list", "--json", env=env)
    assert by_env.returncode == 0 and idle.address("avocat1") in by_env.stdout
    env.pop("PALAIS_HOME")
    by_cwd = admin("account", "list", cwd=idle.root, env=env)
    assert by_cwd.returncode == 0 and idle.address("avocat1") in by_cwd.stdout


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["account", "show", "nobody@avocats.palais.test"], 1, "no account"),
        (["account", "deactivate", "nobody@avocats.palais.test", "--reason", "x"], 1, "no account"),
        (["account", "deactivate", "{avocat1}", "--reason", "  "], 2, "--reason"),
        (["account", "deactivate", "{avocat1}"], 2, "--reason"),
        (["account", "reactivate", "{avocat1}"], 1, "already active"),
        (["audit", "--since", "last tuesday"], 2, "not an ISO 8601 date"),
        (["audit", "--action", "account-renamed"], 2, "--action"),
        (["audit", "--limit", "0"], 2, "--limit"),
        (["account", "list", "--role", "bâtonnier"], 2, "--role"),
    ],
)
def test_bad_input_is_named_with_a_status(
    idle: Instance, args: list[str], status: int, says: str
) -> None:
    args = [a.format(avocat1=idle.address("avocat1")) for a in args]
    done = admin(*args, "-d", str(idle.root))
    assert done.returncode == status, done
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_wrong_instance_directory_is_named(idle: Instance, tmp_path: Path) -> None:
    missing = admin("account", "list", "-d", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr == f"palais admin: {tmp_path / 'nowhere'}: no such instance directory\n"
    no_toml = admin("account", "list", "-d", str(tmp_path))
    assert no_toml.returncode == 2
    assert "palais.toml" in no_toml.stderr and "no such configuration file" in no_toml.stderr
    # A palais.toml whose database was never created: said, and not created.
    other = tmp_path / "copy"
    other.mkdir()
    text = (idle.root / "palais.toml").read_text(encoding="utf-8")
    (other / "palais.toml").write_text(text, encoding="utf-8")
    os.symlink(idle.root / "pki", other / "pki")
    no_db = admin("account", "list", "-d", str(other))
    assert no_db.returncode == 2 and "no database" in no_db.stderr, no_db.stderr
    assert not (other / "palais.db").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "palais.toml").write_text("[instance\n", encoding="utf-8")
    bad = admin("audit", "-d", str(broken))
    assert bad.returncode == 2 and str(broken / "palais.toml") in bad.stderr
    assert "Traceback" not in bad.stderr


# -- on a running gateway -------------------------------------------------------------


def smtp_accepts(inst: Instance, who: str) -> bool:
    """True if ``who`` can still begin a message over SMTPS."""
    try:
        with smtplib.SMTP_SSL(
            "localhost", inst.port("smtps"), context=inst.client_context(who), timeout=10
        ) as s:
            s.ehlo()
            return s.mail(inst.address(who))[0] == 250
    except REFUSED:
        return False


def imap_accepts(inst: Instance, who: str) -> bool:
    try:
        conn = imaplib.IMAP4_SSL(
            "localhost", inst.port("imaps"), ssl_context=inst.client_context(who), timeout=10
        )
    except REFUSED:
        return False
    try:
        return conn.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    except REFUSED:
        return False
    finally:
        try:
            conn.logout()
        except (*REFUSED, imaplib.IMAP4.abort):
            pass


def test_a_deactivated_account_is_refused_within_seconds(gateway: Instance) -> None:
    who = "collaborateur1"
    address = gateway.address(who)
    # Known (and cached) by the gateway before the operator acts.
    assert smtp_accepts(gateway, who) and imap_accepts(gateway, who)
    done = admin(
        "account", "deactivate", address, "--reason", "a quitté le cabinet", "-d", str(gateway.root)
    )
    assert done.returncode == 0, done.stderr
    deactivated = time.monotonic()
    assert wait_for(lambda: not smtp_accepts(gateway, who), timeout=15)
    assert wait_for(lambda: not imap_accepts(gateway, who), timeout=15)
    assert time.monotonic() - deactivated < 15

    def refusals() -> list[dict[str, Any]]:
        return [
            e
            for e in admin_json(gateway, "audit", "--account", address)
            if e["action"] == "connection-refused"
        ]

    assert wait_for(lambda: {e["listener"] for e in refusals()} >= {"smtps", "imaps"})
    events = admin_json(gateway, "audit", "--account", address)
    assert events[0]["action"] == "account-deactivated"
    assert events[0]["actor"].startswith("operator:")
    assert events[0]["reason"] == "a quitté le cabinet"
    for event in refusals():
        assert event["actor"] == "gateway" and event["subject"] == address
        assert "inactive" in event["reason"]
        assert event["peer"].startswith("127.0.0.1:")
        assert len(event["detail"]["fingerprint"]) == 64


def tls_refused(inst: Instance, listener: str, who: str) -> None:
    """Connect to ``listener`` with ``who``'s card; the handshake must fail."""
    ctx = inst.client_context(who)
    with pytest.raises(REFUSED):
        if listener == "smtps":
            with smtplib.SMTP_SSL("localhost", inst.port("smtps"), context=ctx, timeout=10) as s:
                s.ehlo()
                s.noop()
        elif listener in ("submission", "court"):
            with smtplib.SMTP("localhost", inst.port(listener), timeout=10) as s:
                s.ehlo()
                s.starttls(context=ctx)
                s.ehlo()
                s.noop()
        elif listener == "imaps":
            conn = imaplib.IMAP4_SSL("localhost", inst.port("imaps"), ssl_context=ctx, timeout=10)
            try:
                conn.noop()
            finally:  # also when let in: the socket left open failed the next test
                conn.shutdown()
        else:
            sock = socket.create_connection(("127.0.0.1", inst.port("https")), timeout=10)
            with ctx.wrap_socket(sock, server_hostname="localhost") as raw:
                raw.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if not raw.recv(100):
                    raise ConnectionError("closed")


@pytest.mark.parametrize(
    ("listener", "who"),
    [
        ("smtps", "court1"),
        ("submission", "court1"),
        ("court", "avocat1"),
        # IMAPS trusts court systems (they fetch what lawyers sent their
        # juridiction); operators' cards are for HTTPS.
        ("imaps", "admin1"),
        ("https", "court1"),
    ],
)
def test_a_certificate_from_another_community_is_audited_once(
    gateway: Instance, listener: str, who: str
) -> None:
    def mine() -> list[dict[str, Any]]:
        return [
            e
            for e in admin_json(gateway, "audit", "--action", "connection-refused")
            if e["listener"] == listener and e["id"] > before
        ]

    before = max((e["id"] for e in admin_json(gateway, "audit")), default=0)
    tls_refused(gateway, listener, who)
    assert wait_for(lambda: len(mine()) >= 1)
    time.sleep(0.5)  # a second event, if there were one, has had time to land
    [event] = mine()
    assert event["actor"] == "gateway"
    assert event["peer"].startswith("127.0.0.1:")
    assert event["reason"]  # OpenSSL's words: unknown CA, issuer not trusted...
    assert "Traceback" not in event["reason"]


def test_a_refused_rcpt_is_audited_once_with_its_reason(gateway: Instance) -> None:
    before = max((e["id"] for e in admin_json(gateway, "audit")), default=0)
    with smtplib.SMTP_SSL(
        "localhost", gateway.port("smtps"), context=gateway.client_context("avocat1"), timeout=10
    ) as s:
        s.ehlo()
        assert s.mail(gateway.address("avocat1"))[0] == 250
        code, _ = s.rcpt("nobody@nowhere.palais.test")
        assert code == 550

    def mine() -> list[dict[str, Any]]:
        return [
            e
            for e in admin_json(gateway, "audit", "--action", "command-refused")
            if e["id"] > before
        ]

    assert wait_for(lambda: len(mine()) >= 1)
    time.sleep(0.5)
    [event] = mine()
    assert event["listener"] == "smtps"
    assert event["subject"] == gateway.address("avocat1")
    assert event["detail"] == {"command": "RCPT", "kind": "unknown-recipient"}
    assert event["reason"] and event["peer"].startswith("127.0.0.1:")
    # Found by the account too, and exported as JSON lines by the text command's twin.
    assert event["id"] in {
        e["id"] for e in admin_json(gateway, "audit", "--account", event["subject"])
    }
