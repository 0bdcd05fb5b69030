"""Cost limits of IMAP commands: one client must not freeze or bloat the gateway for all.

Each test here stands for a defect of the "Hardening" issue: a SEARCH of
thousands of keys, an OR tree of BODY keys and a FETCH 1:* that held the
event loop (everyone else's NOOP waited seconds), distinct long FETCH lines
whose parses were all kept in memory, and unbounded keywords.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import quopri
import socket
import ssl
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from palais.gateway.imap.commands import registry
from palais.gateway.imap.framing import Limits, RawCommand
from palais.gateway.imap.parser import Args
from palais.gateway.imap.sequence import STAR, parse_sequence_set
from palais.gateway.imap.session import Session
from palais.gateway.imap.states import Selected
from palais.gateway.imap.view import SelectedMailbox
from palais.gateway.metrics import GatewayMetrics
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import EventKind, MailboxEvent, MailboxInfo
from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

IDENTITY = Identity(1, "me@avocats.test", Role.AVOCAT, "Me", "f" * 64, "me@avocats.test")
_BODY = "Maître, la procédure d'appel est enregistrée sous le numéro {n}. " * 30


def qp_message(n: int, extra: str = "") -> bytes:
    """A French message in quoted-printable, as mail clients send them: BODY
    search has to decode it to find an accented word."""
    body = quopri.encodestring((_BODY.format(n=n) + extra).encode()).replace(b"\n", b"\r\n")
    return (
        b"From: Jean Dupont <jean.dupont@avocats.test>\r\nTo: greffe@cph.justice.test\r\n"
        b"Subject: [2025-0000138] Pi\xc3\xa8ce %d\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" % n
    ) + body


def limit_hits(metrics: GatewayMetrics, limit: str) -> float:
    value = metrics.registry.get_sample_value(
        "palais_limit_hits_total", {"listener": "imap", "limit": limit}
    )
    return value or 0.0


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


def start(store: FakeStore, pki: Pki, metrics: GatewayMetrics, **options: object) -> ServerThread:
    return ServerThread(store, pki, idle_timeout=30, metrics=metrics, **options).start()


@pytest.fixture
def small(store: FakeStore, pki: Pki, metrics: GatewayMetrics) -> Iterator[ServerThread]:
    """A server whose searches may cost at most 1,000 (keys x messages)."""
    thread = start(store, pki, metrics, max_search_cost=1000, max_keywords=8)
    try:
        yield thread
    finally:
        thread.stop()


def client(server: ServerThread, pki: Pki, box: bytes | None = b"INBOX") -> RawClient:
    c = RawClient(server.port, pki.client_context(), timeout=30)
    c.login()
    if box is not None:
        assert c.cmd(b"s", b"SELECT " + box)[-1].startswith(b"s OK")
    return c


# -- SEARCH: number of keys, cost, duplicates -------------------------------------------


def test_search_of_thousands_of_keys_is_refused_at_once(
    server: ServerThread, store: FakeStore, pki: Pki
) -> None:
    for i in range(300):
        server.run(store.deliver, "INBOX", qp_message(i))
    with client(server, pki) as c:
        line = b"SEARCH" + b" BODY x" * 9_000  # 63 kB
        before = store.read_count
        reply = c.cmd(b"a", line)[-1]
        assert reply.startswith(b"a NO [LIMIT] Too many search keys (at most 256)"), reply
        # Refused before any key is tested: not a message read.
        assert store.read_count == before
        # The same program within the limit is answered, each key tested once.
        assert c.cmd(b"b", b"SEARCH" + b" UNSEEN" * 200)[0].startswith(b"* SEARCH 1 2 3 ")
        assert c.cmd(b"c", b"NOOP")[-1].startswith(b"c OK")


def test_search_cost_is_keys_times_messages(
    small: ServerThread, store: FakeStore, pki: Pki, metrics: GatewayMetrics
) -> None:
    for i in range(100):
        small.run(store.deliver, "INBOX", qp_message(i))
    with client(small, pki) as c:
        ten = b" ".join(b"NOT BODY absent%d" % i for i in range(10))
        everything = b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, 101)) + b"\r\n"
        assert c.cmd(b"a", b"SEARCH " + ten)[0] == everything
        eleven = ten + b" SMALLER 100000"
        reply = c.cmd(b"b", b"SEARCH " + eleven)
        assert reply[-1].startswith(b"b NO [LIMIT] Search too costly"), reply
        assert b"at most 10 distinct keys" in reply[-1]
        assert limit_hits(metrics, "max_search_cost") == 1
        # Repeating a key costs nothing more.
        assert c.cmd(b"c", b"SEARCH " + ten + b" " + ten)[-1].startswith(b"c OK")
        assert limit_hits(metrics, "max_search_cost") == 1


def test_each_message_is_read_once_for_all_the_text_keys(
    server: ServerThread, store: FakeStore, pki: Pki
) -> None:
    for i in range(40):
        server.run(store.deliver, "INBOX", qp_message(i, f"Référence unique R-{i}."))
    with client(server, pki) as c:
        before = store.read_count
        program = (
            b'OR OR BODY "R-7." TEXT "R-30." OR BODY "r\xc3\xa9f\xc3\xa9rence unique r-12." '
            b'(NOT BODY nulle-part BODY "R-39.") NOT BODY "R-7."'
        )
        lines = c.cmd(b"a", b"SEARCH CHARSET UTF-8 " + program)
        assert lines[0] == b"* SEARCH 13 31 40\r\n", lines  # never R-7
        assert store.read_count - before == 40  # not once per key


def test_search_sequence_sets_of_thousands_of_ranges(
    server: ServerThread, store: FakeStore, pki: Pki
) -> None:
    for i in range(50):
        server.run(store.deliver, "INBOX", b"Subject: %d\r\n\r\nx\r\n" % i)
    with client(server, pki) as c:
        odd = b",".join(b"%d" % n for n in range(1, 20_000, 2))
        lines = c.cmd(b"a", b"SEARCH " + odd)
        assert lines[0] == b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, 50, 2)) + b"\r\n"
        lines = c.cmd(b"b", b"UID SEARCH UID 45:*,3:1,60")
        assert lines[0] == b"* SEARCH 1 2 3 45 46 47 48 49 50\r\n"


# -- the event loop stays responsive -----------------------------------------------------

MESSAGES = 2000
# NOOPs the bystander must get answered while each heavy command runs. With
# the loop held by the command: none for the SEARCH, up to 5 for the FETCH (its
# megabytes of reply drain afterwards); with the loop given back, 40 to 250
# on a 2-core machine shared by several test runs.
BYSTANDER_TURNS = 15


def witness_message(i: int) -> bytes:
    return qp_message(i, " Référence du greffe: dossier-témoin." if i == 1234 else "")


def body_tree() -> bytes:
    """An OR tree of 8 BODY keys, none of them ASCII: every message is decoded."""
    words = [b"absent%d-\xc3\xa9" % i for i in range(7)] + [b"dossier-t\xc3\xa9moin"]
    tree = b"BODY " + words[0]
    for word in words[1:]:
        tree = b"OR " + tree + b" BODY " + word
    return tree


def read_reply(sock: ssl.SSLSocket, tag: bytes) -> bytes:
    """Everything up to the tagged reply, read in big pieces."""
    data = bytearray()
    end = tag + b" "
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        data += chunk
        if not data.endswith(b"\r\n"):
            continue
        last = data.rfind(b"\r\n", 0, len(data) - 2)  # the last line alone, not the whole reply
        if data.startswith(end, last + 2 if last >= 0 else 0):
            return bytes(data)


def session(port: int, ctx: ssl.SSLContext, select: bool = True) -> ssl.SSLSocket:
    sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=60), server_hostname="localhost"
    )
    read_reply(sock, b"*")
    commands = [b"a AUTHENTICATE EXTERNAL ="] + ([b"b SELECT INBOX"] if select else [])
    for command in commands:
        sock.sendall(command + b"\r\n")
        assert b"\r\n" + command[:1] + b" OK" in b"\r\n" + read_reply(sock, command[:1])
    return sock


# The server runs in a process of its own: clients in the same interpreter
# would wait for its lock (the GIL) and measure themselves, not the server.
_SERVER = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from pathlib import Path
    from sqlalchemy import Connection
    from palais.gateway.imap import start_imap_server
    from palais.gateway.metrics import GatewayMetrics
    from palais.mailbox.boxes import BoxKind
    from palais.mailbox.identity import Role
    from palais.storage import open_storage
    from palais.storage.bulk import import_messages
    from palais.storage.directory import Directory
    from tests.imap.conftest import ADDRESS, Pki, resolve_identity
    from tests.imap.fake_store import FakeStore
    from tests.imap.test_limits import MESSAGES, witness_message

    async def serve(access, pki):
        metrics = GatewayMetrics()
        log = logging.getLogger("bystander")
        log.addHandler(logging.NullHandler())
        log.propagate = False
        server = await start_imap_server(
            host="127.0.0.1", port=0, ssl_context=pki.server_context(), access=access,
            resolve_identity=resolve_identity, log=log, metrics=metrics,
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()
        count = metrics.registry.get_sample_value
        seconds = "palais_imap_command_seconds_count"
        names = ("SEARCH", "FETCH", "NOOP")
        print(json.dumps({n: count(seconds, {"command": n}) for n in names}))

    def main():
        pki = Pki(**{k: Path(v) for k, v in json.loads(sys.argv[1]).items()})
        kind, tmp = sys.argv[2], Path(sys.argv[3])
        if kind == "fake":
            store = FakeStore()
            for i in range(MESSAGES):
                store.deliver("INBOX", witness_message(i))
            asyncio.run(serve(store, pki))
            return
        st = open_storage(f"sqlite:///{tmp / 'db.sqlite'}", tmp / "blobs")
        def setup(conn, ctx):
            Directory.add_account(conn, address=ADDRESS, role=Role.AVOCAT, display_name="Test")
        st.commits.run_now(setup)
        # Writer stopped: the import runs in this thread.
        import_messages(
            st, owner=ADDRESS, kind=BoxKind.RECUS, dossier=None, sender="jean@avocats.test",
            messages=(witness_message(i) for i in range(MESSAGES)),
        )
        st.start()
        try:
            asyncio.run(serve(st.mail, pki))
        finally:
            st.close()

    main()
    """
)


@dataclass
class Bystander:
    """What the session sending NOOP after NOOP saw while the heavy commands ran."""

    waits: list[float]  # each NOOP's round trip (printed, never asserted: bench/ times)
    # For each heavy command: the NOOPs sent after the server had begun it
    # and answered before its reply had all come.
    turns: list[int]


def replies(sock: ssl.SSLSocket, tags: list[bytes]) -> Iterator[bytes]:
    """The replies to pipelined commands tagged ``tags``, one by one as each ends."""
    data = bytearray(b"\r\n")  # every line, the first too, after a line end
    for tag in tags:
        end = b"\r\n" + tag + b" "
        looked = 0  # where the tagged line may begin, the bytes before looked through
        while (at := data.find(end, looked)) < 0 or data.find(b"\r\n", at + 2) < 0:
            looked = max(looked, len(data) - len(end)) if at < 0 else at
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise EOFError("server closed the connection")
            data += chunk
        stop = data.index(b"\r\n", at + 2) + 2
        yield bytes(data[2:stop])
        del data[: stop - 2]


def bystander_run(
    pki: Pki, kind: str, tmp: Path, commands: list[bytes]
) -> tuple[list[bytes], Bystander, dict[str, float]]:
    """Run each command on a session of its own while another session sends NOOP
    after NOOP: the replies, what the NOOP session saw and the server's command counts."""
    paths = json.dumps({k: str(v) for k, v in pki.__dict__.items()})
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, paths, kind, str(tmp)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        port = int(proc.stdout.readline())
        ctx = pki.client_context()
        heavy = [session(port, ctx) for _ in commands]
        bystander = session(port, ctx, select=False)
        results: list[bytes] = [b""] * len(commands)
        begun = [threading.Event() for _ in commands]
        done = [threading.Event() for _ in commands]

        def run(i: int) -> None:
            # A NOOP ahead on the same session: once its reply has come, the
            # server is on the heavy command (a session's commands run in turn).
            heavy[i].sendall(b"m NOOP\r\nh " + commands[i] + b"\r\n")
            answers = replies(heavy[i], [b"m", b"h"])
            assert next(answers).endswith(b"m OK NOOP completed\r\n")
            begun[i].set()
            results[i] = next(answers)
            done[i].set()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(commands))]
        for t in threads:
            t.start()
        seen = Bystander(waits=[], turns=[0] * len(commands))
        while any(t.is_alive() for t in threads):
            running = [b.is_set() and not d.is_set() for b, d in zip(begun, done, strict=True)]
            sent = time.perf_counter()
            bystander.sendall(b"n NOOP\r\n")
            assert read_reply(bystander, b"n").endswith(b"n OK NOOP completed\r\n")
            seen.waits.append(time.perf_counter() - sent)
            for i, d in enumerate(done):
                seen.turns[i] += running[i] and not d.is_set()
        for t in threads:
            t.join(60)
        for sock in (*heavy, bystander):
            sock.close()
        proc.stdin.close()
        counts = json.loads(proc.stdout.readline())
    finally:
        if proc.poll() is None:
            proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
    return results, seen, counts


def p99(waits: list[float]) -> float:
    return statistics.quantiles(waits, n=100)[98] if len(waits) >= 2 else waits[0]


HEAVY = [b"SEARCH CHARSET UTF-8 ", b"FETCH 1:* (BODYSTRUCTURE BODY.PEEK[TEXT])"]


@pytest.mark.parametrize("kind", ["fake", "real"])
def test_heavy_search_and_fetch_leave_other_sessions_responsive(
    pki: Pki, tmp_path: Path, kind: str
) -> None:
    program = body_tree()
    if kind == "real":
        # Indexed header keys too: each is a query of the store.
        program = b" ".join(b"NOT SUBJECT absent%d" % i for i in range(100)) + b" " + program
    (search, fetch), seen, counts = bystander_run(
        pki, kind, tmp_path, [HEAVY[0] + program, HEAVY[1]]
    )
    assert search.startswith(b"* SEARCH 1235\r\nh OK")
    assert fetch.count(b" FETCH (") == MESSAGES and b"\r\nh OK" in fetch
    waits = seen.waits
    print(
        f"bystander NOOP ({kind} store): {len(waits)} samples, {seen.turns} while"
        f" SEARCH, FETCH ran, p99 {p99(waits) * 1000:.1f} ms"
    )
    # Counts, not times (times are bench/'s): a command that held the loop
    # would let a few NOOPs through at most between its start and its reply;
    # one that gives the loop back lets the bystander in again and again.
    assert min(seen.turns) >= BYSTANDER_TURNS, seen.turns
    # Every command's time is recorded under its registry name.
    assert counts == {"SEARCH": 1, "FETCH": 1, "NOOP": len(waits) + 2}  # 2: the markers


def test_command_times_are_labelled_by_registry_names_only(
    small: ServerThread, pki: Pki, metrics: GatewayMetrics
) -> None:
    with client(small, pki) as c:
        assert c.cmd(b"a", b"XYZZY-12345 1")[-1].startswith(b"a BAD")
        assert c.cmd(b"b", b"UID NOPE")[-1].startswith(b"b BAD")
        assert c.cmd(b"c", b"uid fetch 1:* (FLAGS)")[-1].startswith(b"c OK")
        assert c.cmd(b"d", b"FETCH 1 (NOPE)")[-1].startswith(b"d BAD")
    labels = {
        sample.labels["command"]
        for family in metrics.registry.collect()
        if family.name == "palais_imap_command_seconds"
        for sample in family.samples
    }
    assert labels == {"AUTHENTICATE", "SELECT", "UID FETCH", "FETCH"}


# -- keywords --------------------------------------------------------------------------


def test_keywords_are_capped_by_default(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    server.run(store.deliver, "INBOX", qp_message(1))
    with client(server, pki) as c:
        many = b" ".join(b"$k%d" % i for i in range(65))
        assert c.cmd(b"a", b"STORE 1 +FLAGS (" + many + b")")[-1].startswith(b"a NO [LIMIT]")
        huge = b"$" + b"x" * 60_000
        assert c.cmd(b"b", b"STORE 1 +FLAGS (" + huge + b")")[-1].startswith(b"b NO [LIMIT]")
        assert server.run(store.flags_of, "INBOX", 1) == frozenset()
        most = b" ".join(b"$k%d" % i for i in range(64))
        assert c.cmd(b"c", b"STORE 1 +FLAGS (" + most + b")")[-1].startswith(b"c OK")


def test_keywords_are_capped_in_number_and_length(
    small: ServerThread, store: FakeStore, pki: Pki, metrics: GatewayMetrics
) -> None:
    small.run(store.deliver, "INBOX", qp_message(1))
    small.run(store.deliver, "INBOX", qp_message(2))
    with client(small, pki) as c:
        nine = b" ".join(b"$k%d" % i for i in range(9))
        reply = c.cmd(b"a", b"STORE 1 +FLAGS (" + nine + b")")[-1]
        assert reply.startswith(b"a NO [LIMIT] Too many keywords on one message (at most 8)")
        long = b"$" + b"x" * 64
        reply = c.cmd(b"b", b"STORE 1 FLAGS (\\Seen " + long + b")")[-1]
        assert reply.startswith(b"b NO [LIMIT] Keyword too long (at most 64 characters)")
        assert small.run(store.flags_of, "INBOX", 1) == frozenset()
        # Eight are fine; one more, added later, is not; re-adding one is.
        six = b" ".join(b"$k%d" % i for i in range(6))
        assert c.cmd(b"c", b"STORE 1:2 +FLAGS.SILENT (\\Seen " + six + b")")[-1].startswith(b"c OK")
        assert c.cmd(b"d", b"STORE 1 +FLAGS.SILENT ($x $y)")[-1].startswith(b"d OK")
        reply = c.cmd(b"e", b"STORE 1:2 +FLAGS ($z)")[-1]
        assert reply.startswith(b"e NO [LIMIT]"), reply
        assert "$z" not in small.run(store.flags_of, "INBOX", 2)
        assert c.cmd(b"f", b"STORE 1 +FLAGS ($x \\Flagged)")[-1].startswith(b"f OK")
        assert c.cmd(b"g", b"STORE 2 +FLAGS ($z)")[-1].startswith(b"g OK")
        assert c.cmd(b"h", b"STORE 1 -FLAGS ($k0)")[-1].startswith(b"h OK")
        reply = c.cmd(b"i", b"APPEND INBOX (" + nine + b") {5+}\r\nab\r\n\r\n")[-1]
        assert reply.startswith(b"i NO [LIMIT] Too many keywords"), reply
        reply = c.cmd(b"j", b"APPEND INBOX (" + long + b") {5+}\r\nab\r\n\r\n")[-1]
        assert reply.startswith(b"j NO [LIMIT] Keyword too long"), reply
    assert limit_hits(metrics, "max_keywords") == 3
    assert limit_hits(metrics, "max_keyword_length") == 2


# -- memory ----------------------------------------------------------------------------


def test_sequence_sets_are_merged_when_parsed() -> None:
    assert parse_sequence_set(b",".join(b"%d" % n for n in range(1, 10_001))).ranges == (
        (1, 10_000),
    )
    assert parse_sequence_set(b",".join([b"7:3"] * 5000)).ranges == ((3, 7),)
    assert parse_sequence_set(b"9,*,4:*,1:2,3,20:*,*:8").ranges == (
        (1, 3),
        (9, 9),
        (4, STAR),
        (20, STAR),
    )
    assert parse_sequence_set(b"*,*").ranges == ((STAR, STAR),)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


LINES = 1000


def long_fetch(base: bytes, i: int) -> bytes:
    """A distinct UID FETCH line naming thousands of separate UIDs."""
    return b" %d," % (i + 1) + base + b" (FLAGS ENVELOPE)"


def short_fetch(i: int) -> bytes:
    return b" 1:* (FLAGS) (CHANGEDSINCE %d)" % (1000 + i)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_distinct_fetch_lines_are_remembered_within_a_byte_budget() -> None:
    handler = registry.REGISTRY["UID FETCH"]
    # About 24 kB of separate UIDs (a 64 kB line takes a little longer to parse, alike).
    base = b",".join(b"%d" % (3 * k) for k in range(10, 4000))
    handler.parse_memo(Args(RawCommand((long_fetch(base, LINES),))))  # warm-up
    before = _rss()
    for i in range(LINES):
        handler.parse_memo(Args(RawCommand((long_fetch(base, i),))))
    for i in range(3000):  # short lines are kept, within the budget too
        handler.parse_memo(Args(RawCommand((short_fetch(i),))))
    grown = _rss() - before
    print(f"{LINES} distinct {len(long_fetch(base, 0)) // 1024} kB FETCH lines: +{grown >> 20} MiB")
    assert grown < 24 * 1024 * 1024  # 392 MiB when every parse was kept
    assert registry._MEMO.size <= registry.MEMO_BYTES
    assert registry._PARSED and all(len(k[1]) <= registry.MEMO_LINE for k in registry._PARSED)
    assert ("UID FETCH", short_fetch(2999), False) in registry._PARSED  # the newest are kept
    assert sum(registry.memo_cost(k) for k in registry._PARSED) == registry._MEMO.size


# -- another session's changes to every message of a big box ----------------------------


class _Sink:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False


def test_flag_changes_on_a_big_box_are_sent_without_holding_the_loop() -> None:
    count = 60_000
    info = MailboxInfo(1, "INBOX", 1, count + 1, 1, count, 0)
    view = SelectedMailbox(info, read_only=False)
    view.load(array("I", range(1, count + 1)))
    seen = frozenset({"\\Seen"})
    for uid in range(1, count + 1):  # another session: STORE 1:* +FLAGS (\Seen)
        view.on_event(MailboxEvent(1, EventKind.FLAGS_CHANGED, uid, seen, 10 + uid))

    async def go() -> tuple[int, bytes]:
        sink = _Sink()
        session = Session(
            asyncio.StreamReader(),
            sink,
            FakeStore(),
            proven=None,
            refusal=None,
            log=logging.getLogger("test"),
            limits=Limits(),
            idle_timeout=30,
        )
        session.state = Selected(IDENTITY, view)
        ticks = 0
        done = False

        async def other() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(other())
        await session.send_updates(allow_expunge=True)
        # A change that comes while the lines go out is kept for the next time.
        view.on_event(MailboxEvent(1, EventKind.FLAGS_CHANGED, 7, frozenset(), 99_999))
        done = True
        await task
        await session.flush(force=True)
        return ticks, bytes(sink.data)

    ticks, sent = asyncio.run(go())
    lines = sent.split(b"\r\n")[:-1]
    assert len(lines) == count
    assert lines[0] == b"* 1 FETCH (UID 1 FLAGS (\\Seen))"
    assert lines[-1] == b"* %d FETCH (UID %d FLAGS (\\Seen))" % (count, count)
    assert ticks > 1  # the other task ran while the lines were made
    assert view.take_updates(allow_expunge=True, condstore=False) == [
        b"* 7 FETCH (UID 7 FLAGS ())\r\n"
    ]


def test_a_long_search_stops_when_its_client_goes(store: FakeStore, pki: Pki) -> None:
    total = 3000
    for i in range(total):
        store.deliver("INBOX", qp_message(i))
    # At least 6 s to read them all: a loaded machine that starves this
    # client thread still closes long before the search could end.
    store.read_pause = 0.002
    server = start(store, pki, GatewayMetrics())
    try:
        c = client(server, pki)
        before = store.read_count
        c.send(b"h SEARCH CHARSET UTF-8 " + body_tree() + b"\r\n")
        # Gone as soon as the search has started reading: a fixed pause let a
        # fast machine finish the whole search first.
        started = time.monotonic() + 5
        while store.read_count == before and time.monotonic() < started:
            time.sleep(0.001)
        c.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = [r.getMessage() for r in server.handler.records]
            # The session's closing line: "connection-lost" when a write
            # finds the socket gone, the state it was in when a read meets EOF.
            if any(line.startswith("imap connection ") for line in lines):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the session did not end: {lines}")
        read = store.read_count - before
        time.sleep(0.3)
        assert store.read_count - before == read < total  # stopped, not run to the end
    finally:
        server.stop()
