"""Sessions expunging and storing on one box while another FETCHes and STOREs:
no SERVERBUG, nothing in the server log, MODSEQ never going back for a UID
(RFC 7162 3.1), only OK or NO [EXPUNGEISSUED] (RFC 5530). On a real instance,
real store: its notifications come from the writer's thread, as in production."""

from __future__ import annotations

import random
import re
import smtplib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from palais.mailbox.identity import Identity
from palais.mailbox.model import EventKind, MailboxEvent, MessageRecord
from tests.e2e.instance import Instance, create_instance
from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

MESSAGES = 120
SECONDS = 3.0
WHO = "greffier1"
_FETCH = re.compile(rb"^\* \d+ FETCH \(.*\)\r\n$", re.S)
_UID = re.compile(rb"[( ]UID (\d+)")
_MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")


class Client(RawClient):
    """A session of the instance's clerk, tagging its commands itself."""

    def __init__(self, inst: Instance) -> None:
        super().__init__(inst.port("imaps"), inst.client_context(WHO), timeout=10)
        self.count = 0

    def tagged(self, text: str) -> list[bytes]:
        self.count += 1
        return self.cmd(b"t%d" % self.count, text.encode())


def _send(inst: Instance, count: int) -> None:
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context("avocat1")
    ) as s:
        for n in range(count):
            raw = (
                f"From: {inst.address('avocat1')}\r\nTo: {inst.dossier['address']}\r\n"
                f"Subject: [{inst.dossier['number']}] Pièce {n}\r\n"
                f"Message-ID: <{uuid.uuid4().hex}@avocats.palais.test>\r\n"
                "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                "Veuillez trouver la pièce.\r\n"
            ).encode()
            s.sendmail(inst.address("avocat1"), [inst.dossier["address"]], raw)


@pytest.fixture(scope="module")
def busy_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root: Path = tmp_path_factory.mktemp("palais-concurrent") / "instance"
    inst = create_instance(root)
    inst.start()
    try:
        _send(inst, MESSAGES)
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


def _tagged_ok(lines: list[bytes], failures: list[bytes]) -> None:
    last = lines[-1]
    status = last.split(b" ", 2)[1]
    if status == b"OK" or last.split(b" ", 2)[2].startswith(b"NO [EXPUNGEISSUED]"):
        return
    if status == b"NO" and b"[EXPUNGEISSUED]" in last:
        return
    failures.append(last)


def _login(inst: Instance, *, condstore: bool = False) -> Client:
    client = Client(inst)
    assert client.tagged("AUTHENTICATE EXTERNAL =")[-1].split(b" ")[1] == b"OK"
    if condstore:
        client.tagged("ENABLE CONDSTORE")
    assert client.tagged("SELECT INBOX")[-1].split(b" ")[1] == b"OK"
    return client


def _uids(client: Client) -> list[int]:
    lines = client.tagged("UID SEARCH ALL")
    found = next(x for x in lines if x.startswith(b"* SEARCH"))
    return [int(u) for u in found.split()[2:]]


def test_fetch_and_store_while_others_expunge(busy_box: Instance) -> None:
    inst = busy_box
    deadline = time.monotonic() + SECONDS
    failures: list[bytes] = []
    errors: list[BaseException] = []

    def expunger(seed: int) -> None:
        rng = random.Random(seed)
        client = _login(inst)
        try:
            for _ in range(200):
                if time.monotonic() > deadline:
                    break
                uids = _uids(client)
                if len(uids) < 10:
                    break
                chosen = rng.sample(uids, 3)
                text = ",".join(map(str, chosen))
                _tagged_ok(client.tagged(f"UID STORE {text} +FLAGS.SILENT (\\Deleted)"), failures)
                _tagged_ok(client.tagged(f"UID EXPUNGE {text}"), failures)
                first = rng.randint(0, len(uids) - 6)
                run = ",".join(map(str, uids[first : first + 6]))
                _tagged_ok(client.tagged(f"UID STORE {run} +FLAGS (\\Flagged)"), failures)
                _tagged_ok(client.tagged(f"UID STORE {run} -FLAGS (\\Flagged)"), failures)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=expunger, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    watcher = _login(inst, condstore=True)
    rng = random.Random(99)
    seen: dict[int, int] = {}
    backwards: list[tuple[int, int, int]] = []
    rounds = 0
    exists = MESSAGES
    try:
        while time.monotonic() < deadline and rounds < 400:
            rounds += 1
            # Sparse sets (every other message): the store reads the UID
            # range, and must give back only what was asked.
            first = rng.randint(1, max(1, exists - 7))
            numbers = ",".join(str(n) for n in range(first, first + 8, 2) if n <= exists)
            items = rng.choice(["(UID FLAGS MODSEQ ENVELOPE)", "(UID BODY.PEEK[])"])
            commands = [f"FETCH {numbers} {items}"]
            if rounds % 4 == 0:
                commands.append(f"STORE {numbers} +FLAGS ($Lu{rounds % 3})")
            if rounds % 8 == 0:  # these announce the expunges
                commands.append(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {rng.randint(1, 50)})")
                commands.append("NOOP")
            for command in commands:
                lines = watcher.tagged(command)
                _tagged_ok(lines, failures)
                for line in lines[:-1]:
                    if line.endswith(b" EXPUNGE\r\n"):
                        exists -= 1
                    elif line.endswith(b" EXISTS\r\n"):
                        exists = int(line.split()[1])
                    if not _FETCH.match(line):
                        continue
                    uid, modseq = _UID.search(line), _MODSEQ.search(line)
                    if uid is None or modseq is None:
                        if b"FLAGS (" in line:  # CONDSTORE enabled: both, always
                            failures.append(b"FETCH without UID or MODSEQ: " + line[:200])
                        continue
                    u, m = int(uid.group(1)), int(modseq.group(1))
                    if m < seen.get(u, 0):
                        backwards.append((u, seen[u], m))
                    seen[u] = max(m, seen.get(u, 0))
    finally:
        for thread in threads:
            thread.join(SECONDS + 20)
        watcher.close()
    assert not errors, errors
    assert not failures, failures[:5]
    assert not backwards, backwards[:5]
    assert rounds > 5 and seen
    log = inst.read_log()
    assert "SERVERBUG" not in log and "Traceback" not in log and "ERROR" not in log, log[-3000:]


MSG = b"From: a@b.test\r\nSubject: s\r\n\r\nbody\r\n"


def test_a_late_notification_never_takes_modseq_back(
    server: ServerThread, store: FakeStore, raw: RawClient
) -> None:
    for _ in range(2):
        server.run(store.deliver, "INBOX", MSG)
    raw.login()
    raw.cmd(b"a", b"ENABLE CONDSTORE")
    raw.cmd(b"b", b"SELECT INBOX")
    box = store.boxes["INBOX"]

    def change_quietly() -> tuple[int, int]:
        # Two changes by another session whose notifications are still on their way.
        before = box.messages[1].modseq
        box.modseq += 2
        box.messages[1].flags, box.messages[1].modseq = frozenset({"\\Seen"}), box.modseq
        return before + 1, box.modseq

    for items in (b"(FLAGS MODSEQ)", b"(FLAGS MODSEQ ENVELOPE)"):
        older, newer = server.run(change_quietly)
        lines = raw.cmd(b"c", b"FETCH 1 " + items)
        assert b"MODSEQ (%d)" % newer in lines[0], lines
        # The notifications arrive now: the first one is older than what FETCH showed.
        for modseq, flags in ((older, {"\\Flagged"}), (newer, {"\\Seen"})):
            event = MailboxEvent(box.id, EventKind.FLAGS_CHANGED, 1, frozenset(flags), modseq)
            server.run(store._emit, event)
        assert raw.cmd(b"d", b"NOOP") == [b"d OK NOOP completed\r\n"]


class _GenerousStore(FakeStore):
    """Answers a UID range rather than the UIDs asked, as a store reading
    ``uid BETWEEN lo AND hi`` would once one of those asked was expunged."""

    async def records(
        self, who: Identity, mailbox_id: int, uids: Sequence[int]
    ) -> list[MessageRecord]:
        asked = sorted(uids)
        span = range(asked[0], asked[-1] + 1) if asked else range(0)
        return await super().records(who, mailbox_id, list(span))


@pytest.fixture
def generous() -> _GenerousStore:
    return _GenerousStore()


def test_records_not_asked_for_are_not_shown(generous: _GenerousStore, pki: Pki) -> None:
    server = ServerThread(generous, pki, idle_timeout=30).start()
    try:
        for _ in range(4):
            server.run(generous.deliver, "INBOX", MSG)
        with RawClient(server.port, pki.client_context()) as client:
            client.login()
            client.cmd(b"a", b"SELECT INBOX")
            lines = client.cmd(b"b", b"FETCH 1,3 (UID ENVELOPE)")
        assert [x.split(b" (", 1)[0] for x in lines[:-1]] == [b"* 1 FETCH", b"* 3 FETCH"]
        assert lines[-1] == b"b OK FETCH completed\r\n"
        assert not [r for r in server.handler.records if r.levelname == "ERROR"]
    finally:
        server.stop()
