"""Departures on a real instance: `palais admin departure` in a separate process, the
running gateway carrying them out, and what users see over IMAP afterwards.

The gateway carries a departure out at 00:00 the day after its last day. A
test cannot wait for midnight: once a departure is set for today, the test
moves that one departure's effective instant into the past in the database
(what the passing of time would do), and the running gateway's next look
finds it due. The clock itself is moved in tests/storage/test_departure.py.
"""

from __future__ import annotations

import imaplib
import io
import json
import smtplib
import sqlite3
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from palais.mailbox.identity import Role
from tests.e2e.instance import Instance, create_instance

REFUSED = (ssl.SSLError, ConnectionError, EOFError, imaplib.IMAP4.error, imaplib.IMAP4.abort)
TODAY = datetime.now(ZoneInfo("Europe/Paris")).date()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


def imap_as(inst: Instance, who: str) -> imaplib.IMAP4_SSL:
    """``who``'s IMAP session, its socket closed if refused."""
    imap = imaplib.IMAP4_SSL(
        "localhost", inst.port("imaps"), ssl_context=inst.client_context(who), timeout=30
    )
    try:
        imap.authenticate("EXTERNAL", lambda _: b"")
    except BaseException:
        imap.shutdown()
        raise
    return imap


def imap_refused(inst: Instance, who: str) -> bool:
    """Whether ``who`` is refused a new IMAP session (the gateway's identity cache
    forgets an account within seconds)."""
    try:
        imap_as(inst, who).logout()
    except REFUSED:
        return True
    return False


def boxes(imap: imaplib.IMAP4_SSL) -> str:
    typ, data = imap.list()
    assert typ == "OK"
    return b"\n".join(d for d in data if isinstance(d, bytes)).decode()


def fetch_all(imap: imaplib.IMAP4_SSL, box: str) -> list[bytes]:
    assert imap.select(box, readonly=True)[0] == "OK"
    typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
    if typ != "OK":
        return []
    return [item[1] for item in data if isinstance(item, tuple)]


def make_due(inst: Instance, address: str) -> None:
    """What the passing of midnight does: the pending departure of ``address`` is due."""
    with sqlite3.connect(inst.root / "palais.db", timeout=30) as db:
        changed = db.execute(
            "UPDATE departure SET effective_at = ? WHERE state = 'pending' AND account_id ="
            " (SELECT id FROM account WHERE address = ?)",
            ((datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f"), address),
        ).rowcount
    assert changed == 1


def departure_state(inst: Instance, address: str) -> str | None:
    rows = [r for r in inst.admin_json("departure", "list", "--all") if r["address"] == address]
    return str(rows[-1]["state"]) if rows else None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = create_instance(
        tmp_path_factory.mktemp("departure") / "instance",
        extra_config="[departures]\ncheck_interval = 0.5\n\n"
        "[limits]\nsession_check_interval = 1.0\n",
    )
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


# -- the command's refusals -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["set", "nobody@justice.palais.test", "--date", "2099-01-01"], 1, "no account"),
        (["set", "{avocat1}", "--date", "2099-01-01"], 1, "departures are for clerks"),
        (["set", "{greffier1}", "--date", "2001-01-01"], 1, "2001-01-01 is in the past"),
        (["set", "{greffier1}", "--date", "31/12/2099"], 2, "not a date: '31/12/2099'"),
        (
            ["set", "{greffier1}", "--date", "2099-01-01", "--successor", "{greffier1}"],
            1,
            "cannot succeed themselves",
        ),
        (
            ["set", "{greffier1}", "--date", "2099-01-01", "--successor", "{magistrat1}"],
            1,
            "a greffier's dossiers go to a greffier",
        ),
        (
            ["set", "{magistrat1}", "--date", "2099-01-01", "--successor", "{avocat2}"],
            1,
            "is a avocat",
        ),
        (
            ["set", "{magistrat1}", "--date", "2099-01-01", "--successor", "x@nowhere.test"],
            1,
            "no account 'x@nowhere.test' (the successor)",
        ),
        (
            [
                "set",
                "{greffier1}",
                "--date",
                "2099-01-01",
                "--successor",
                "{greffier1}",
                "--no-successor",
            ],
            2,
            "exclude each other",
        ),
        (["cancel", "{greffier1}"], 1, "has no pending departure"),
        (["cancel", "nobody@justice.palais.test"], 1, "no account"),
    ],
)
def test_each_refusal_exits_non_zero_and_names_what_is_wrong(
    gateway: Instance, args: list[str], status: int, words: str
) -> None:
    people = {n: gateway.address(n) for n in ("avocat1", "avocat2", "greffier1", "magistrat1")}
    # In the test's process (a process each took seconds; the commands that
    # succeed run as processes of their own below).
    out = io.StringIO()
    code, stderr = gateway.admin_here("departure", *(a.format(**people) for a in args), out=out)
    assert code == status, (out.getvalue(), stderr)
    assert words in stderr
    assert stderr.startswith(("palais admin: ", "usage:"))
    assert "Traceback" not in stderr
    assert gateway.admin_json("departure", "list") == []


# -- carried out by the running gateway -----------------------------------------------


def test_a_cancelled_departure_never_happens(gateway: Instance) -> None:
    card = gateway.new_card(
        "greffier2",
        "lea.nouvelle@justice.palais.test",
        "MJ-G-200001",
        Role.GREFFIER,
        given_name="Nouvel",
        surname="Agent",
    )
    gateway.imap_card(card).logout()  # registered on first use
    address = card.address
    assert gateway.admin("departure", "set", address, "--date", "2099-06-30").returncode == 0
    # Changed: another date; then cancelled before it.
    done = gateway.admin("departure", "set", address, "--date", TODAY.isoformat())
    assert done.returncode == 0, done.stderr
    [pending] = gateway.admin_json("departure", "list")
    assert pending["last_day"] == TODAY.isoformat() and pending["state"] == "pending"
    done = gateway.admin("departure", "cancel", address, "--reason", "reste en poste")
    assert done.returncode == 0, done.stderr
    assert gateway.admin_json("departure", "list") == []
    with sqlite3.connect(gateway.root / "palais.db", timeout=30) as db:
        db.execute("UPDATE departure SET effective_at = '2000-01-01 00:00:00.000000'")
    time.sleep(2)  # four looks of the gateway
    assert departure_state(gateway, address) == "cancelled"
    gateway.imap_card(card).logout()  # still active
    actions = [e["action"] for e in gateway.admin_json("audit", "--account", address)]
    assert actions == ["departure-set", "departure-set", "departure-cancelled"]


def test_a_magistrate_s_successor_sees_the_dossier_and_the_departed_is_refused(
    gateway: Instance,
) -> None:
    number = gateway.dossier["number"]
    judge = gateway.address("magistrat1")
    card = gateway.new_card(
        "magistrat2",
        "anne.suivante@justice.palais.test",
        "MJ-M-200002",
        Role.MAGISTRAT,
        given_name="Nouvel",
        surname="Agent",
    )
    successor = gateway.imap_card(card)  # registered on first use, no dossier yet
    assert number not in boxes(successor)
    successor.logout()
    # A lawyer writes to the dossier with the magistrate in copy.
    msg = EmailMessage()
    msg["From"] = gateway.address("avocat1")
    msg["To"] = gateway.dossier["address"]
    msg["Cc"] = judge
    msg["Subject"] = f"[{number}] conclusions avant le départ"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    msg.set_content("Monsieur le juge,")
    with smtplib.SMTP_SSL(
        "localhost", gateway.port("smtps"), context=gateway.client_context("avocat1"), timeout=10
    ) as s:
        assert s.send_message(msg) == {}

    done = gateway.admin(
        "departure", "set", judge, "--date", TODAY.isoformat(), "--successor", card.address
    )
    assert done.returncode == 0, done.stderr
    assert "takes effect" in done.stdout and card.address in done.stdout
    departed = gateway.imap("magistrat1")  # still working on the last day
    assert departed.select("INBOX")[0] == "OK"

    make_due(gateway, judge)
    assert wait_for(lambda: departure_state(gateway, judge) == "done")

    successor = gateway.imap_card(card)
    try:
        [filed] = fetch_all(successor, f'"Dossiers/{number}/Re&AOc-us"')
        assert b"Monsieur le juge," in filed
    finally:
        successor.logout()

    # The departed: the open session is cut, a new one refused.
    def cut() -> bool:
        try:
            departed.noop()
        except REFUSED:
            return True
        return False

    try:
        assert wait_for(cut)
    finally:
        departed.shutdown()
    assert wait_for(lambda: imap_refused(gateway, "magistrat1"))
    events = gateway.admin_json("audit", "--account", judge)
    actions = [e["action"] for e in events]
    assert actions[:3] == ["departure-set", "departure-carried-out", "account-deactivated"]
    carried = events[1]
    assert carried["actor"] == "gateway"
    assert carried["detail"]["successor"] == card.address
    assert carried["detail"]["dossiers_joined"] == [number]
    assert "connection-refused" in actions or "session-closed" in actions


def test_without_a_successor_the_lawyers_read_the_notice(gateway: Instance) -> None:
    number = gateway.dossier["number"]
    clerk = gateway.address("greffier1")
    done = gateway.admin("departure", "set", clerk, "--date", TODAY.isoformat(), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["successor"] is None
    make_due(gateway, clerk)
    assert wait_for(lambda: departure_state(gateway, clerk) == "done")
    for lawyer in ("avocat1", "avocat2"):
        imap = gateway.imap(lawyer)
        try:
            notices = [
                m
                for m in fetch_all(imap, f'"Dossiers/{number}/Re&AOc-us"')
                if b"auto-generated" in m
            ]
            assert len(notices) == 1
            mail = BytesParser(policy=default).parsebytes(notices[0])
            assert mail["Subject"] == f"[{number}] Départ du greffier en charge du dossier"
            assert mail["From"].addresses[0].addr_spec == gateway.dossier["service_address"]
            body = mail.get_body()
            assert body is not None
            text = body.get_content()
            assert "Aucun successeur" in text and gateway.dossier["service"] in text
            # Reading it (\Seen set) works like any received message.
            assert imap.select(f'"Dossiers/{number}/Re&AOc-us"')[0] == "OK"
            typ, _ = imap.search(None, "UNSEEN")
            assert typ == "OK"
            assert imap.fetch("1:*", "(BODY[])")[0] == "OK"
        finally:
            imap.logout()
    assert wait_for(lambda: imap_refused(gateway, "greffier1"))
    [carried] = gateway.admin_json("audit", "--action", "departure-carried-out", "--account", clerk)
    assert sorted(carried["detail"]["lawyers_notified"]) == sorted(
        f"{gateway.address(n)} {number}" for n in ("avocat1", "avocat2")
    )
    # The operator's /metrics counts both departures and the session cut.
    scraped = gateway.curl_https("/metrics", "admin1")
    assert scraped.stdout.endswith("\n200"), scraped.stderr
    values = {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for family in text_string_to_metric_families(scraped.stdout.rsplit("\n", 1)[0])
        for s in family.samples
    }
    assert values["palais_departures_executed_total{}"] == 2
    assert values['palais_sessions_closed_total{"reason": "account-deactivated"}'] >= 1
    assert values["palais_audit_events_written_total{}"] >= 1
    assert values["palais_audit_events_dropped_total{}"] == 0
    assert values['palais_crls_stale{"state": "beyond_grace"}'] == 0
    assert 'palais_crl_fetches_total{"result": "rejected"}' in values
    # A departure in effect can be neither changed nor cancelled.
    done = gateway.admin("departure", "cancel", clerk)
    assert done.returncode == 1 and "no pending departure" in done.stderr
    done = gateway.admin("departure", "set", clerk, "--date", "2099-01-01")
    assert done.returncode == 1 and "already deactivated" in done.stderr
