"""The workloads. Each is an ``async`` function (target, params, run) -> dict.

Every loop is bounded both in count and in wall-clock time, and every
network wait has a timeout, so a workload always ends by itself; a workload
that could not finish reports ``complete: false`` with what it measured.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import corpus, procs, receipts
from .imap_client import IMAPConnection, IMAPError, quote
from .smtp_client import SMTPConnection, SMTPReplyError
from .stats import latency_summary, median
from .targets.base import Identity, Target

NET_ERRORS = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    ssl.SSLError,
    asyncio.IncompleteReadError,
)


@dataclass
class Params:
    # ingest
    n: int = 10_000
    size_kib: float = 4.0
    concurrency: int = 20
    # storm
    storm_n: int = 2_000
    storm_concurrency: int = 20
    # imap
    imap_messages: int = 100_000
    imap_repeats: int = 15
    # push
    push_rate: float = 200.0
    push_duration_s: float = 30.0
    push_probe_rate: float = 10.0
    push_connections: int = 4
    # memory
    memory_sessions: int = 1_000
    memory_open_concurrency: int = 50
    # receipts (Palais only)
    receipts_n: int | None = None  # messages of its own ingest (None: the same as ingest's n)
    receipts_reads: int = 200  # first reads, one at a time, each awaiting its read receipt
    # bounds
    send_timeout_s: float = 300.0  # max time for the sending phase of ingest/storm
    filing_timeout_s: float = (
        120.0  # max wait after the last 250 for the last message to be readable
    )
    io_timeout_s: float = 30.0  # any single network wait
    max_errors: int = 50  # a load loop stops after this many failed messages
    rounds: int = 1  # repetitions of ingest/storm/push (alternating target order)
    # nodes: the configurations to run (keys of bench.nodes.CONFIGS; empty: all)
    nodes_configs: tuple[str, ...] = ()


@dataclass
class Run:
    run_id: str
    log: Callable[[str], None] = print
    makers: dict[float, corpus.MessageMaker] = field(default_factory=dict)
    # The run's temporary directory (workloads that make their own instances: nodes).
    workdir: Path | None = None

    def maker(self, size_kib: float) -> corpus.MessageMaker:
        if size_kib not in self.makers:
            self.makers[size_kib] = corpus.MessageMaker(size_kib, self.run_id)
        return self.makers[size_kib]


# -- connection helpers ---------------------------------------------------------------------------
async def open_imap(target: Target, identity: Identity, timeout: float) -> IMAPConnection:
    assert target.imap is not None
    conn = await IMAPConnection.open(
        target.imap.host,
        target.imap.port,
        target.client_context(identity),
        server_hostname=target.server_hostname,
        timeout=timeout,
    )
    try:
        if identity.imap_user:
            await conn.login(identity.imap_user, "")
        else:
            await conn.authenticate_external()
    except BaseException:
        await conn.close()
        raise
    return conn


async def open_smtp(target: Target, ctx: ssl.SSLContext, timeout: float) -> SMTPConnection:
    assert target.smtp is not None
    return await SMTPConnection.open(
        target.smtp.host,
        target.smtp.port,
        ctx,
        implicit_tls=target.smtp.implicit_tls,
        server_hostname=target.server_hostname,
        timeout=timeout,
    )


async def inbox_count(conn: IMAPConnection, mailbox: str) -> int:
    return (await conn.status(mailbox, "MESSAGES")).get("messages", 0)


async def wait_filed(
    conn: IMAPConnection,
    mailbox: str,
    want: int,
    timeout: float,
    min_interval: float = 0.02,
    max_interval: float = 0.5,
) -> tuple[float | None, int]:
    """Poll STATUS MESSAGES until ``want`` is reached; (time reached or None, last count).

    Polling is adaptive: each STATUS makes the server look at the mailbox
    (Dovecot rescans the Maildir), so polls are spaced by half the estimated
    time still needed (at least ``min_interval``, at most ``max_interval``).
    The measurement stays within ``min_interval`` of the true time near the
    end while not loading the server during a long filing phase.
    """
    deadline = time.monotonic() + timeout
    prev: tuple[float, int] | None = None
    count = 0
    while True:
        count = await inbox_count(conn, mailbox)
        now = time.monotonic()
        if count >= want:
            return now, count
        if now >= deadline:
            return None, count
        interval = min_interval
        if prev is not None and now > prev[0] and count > prev[1]:
            rate = (count - prev[1]) / (now - prev[0])
            interval = (want - count) / rate / 2
        elif prev is not None:
            interval = max_interval / 2
        prev = (now, count)
        await asyncio.sleep(
            min(max_interval, max(min_interval, interval), max(0.0, deadline - now))
        )


# (server port, client's local port) -> the node (worker process) serving that
# connection, None if unknown: given for targets of several processes.
NodeOf = Callable[[int, int], str | None]


def local_port(writer: asyncio.StreamWriter) -> int:
    sockname = writer.get_extra_info("sockname")
    return int(sockname[1]) if sockname else 0


def _errors_summary(errors: list[str]) -> dict[str, Any]:
    return {"errors": len(errors), "error_sample": errors[:3]}


# -- 1. ingest ------------------------------------------------------------------------------------
async def ingest(
    target: Target, p: Params, run: Run, *, node_of: NodeOf | None = None
) -> dict[str, Any]:
    """``node_of``: also report how the connections were spread over the nodes."""
    return await _smtp_load(
        target, p, run, mode="ingest", n=p.n, concurrency=p.concurrency, node_of=node_of
    )


# -- 2. storm -------------------------------------------------------------------------------------
async def storm(target: Target, p: Params, run: Run) -> dict[str, Any]:
    return await _smtp_load(
        target, p, run, mode="storm", n=p.storm_n, concurrency=p.storm_concurrency
    )


async def _smtp_load(
    target: Target,
    p: Params,
    run: Run,
    *,
    mode: str,
    n: int,
    concurrency: int,
    node_of: NodeOf | None = None,
) -> dict[str, Any]:
    assert target.sender is not None and target.reader is not None
    sender_addr = target.sender.address
    reader = await open_imap(target, target.reader, p.io_timeout_s)
    try:
        base = await inbox_count(reader, target.inbox)
        maker = run.maker(p.size_kib)
        prefix = target.subject_prefix(target.recipient)
        tag = f"{mode}{int(time.time() * 1000) % 10**8}"
        payloads = [
            maker.make(
                tag=tag,
                i=i,
                sender=sender_addr,
                recipient=target.recipient,
                subject_prefix=prefix,
            )[1]
            for i in range(n)
        ]
        ctx = target.client_context(target.sender)
        concurrency = max(1, min(concurrency, n))
        latencies: list[float] = []
        handshakes: list[float] = []
        sessions: list[float] = []
        errors: list[str] = []
        counter = itertools.count()
        stop = asyncio.Event()

        def fail(msg: str) -> None:
            errors.append(msg)
            if len(errors) >= p.max_errors:
                stop.set()

        async def reused_worker(conn: SMTPConnection | None) -> None:
            while not stop.is_set():
                i = next(counter)
                if i >= n or time.monotonic() > send_deadline:
                    break
                try:
                    if conn is None:
                        conn = await open_smtp(target, ctx, p.io_timeout_s)
                    latencies.append(await conn.send(sender_addr, [target.recipient], payloads[i]))
                except SMTPReplyError as exc:
                    fail(str(exc))
                    try:
                        await conn.command("RSET", 250)  # type: ignore[union-attr]
                    except (*NET_ERRORS, SMTPReplyError):
                        if conn is not None:
                            await conn.close()
                        conn = None
                except NET_ERRORS as exc:
                    fail(f"{type(exc).__name__}: {exc}")
                    if conn is not None:
                        await conn.close()
                    conn = None
            if conn is not None:
                await conn.quit()

        async def storm_worker() -> None:
            while not stop.is_set():
                i = next(counter)
                if i >= n or time.monotonic() > send_deadline:
                    break
                t_open = time.monotonic()
                conn: SMTPConnection | None = None
                try:
                    conn = await open_smtp(target, ctx, p.io_timeout_s)
                    handshakes.append(time.monotonic() - t_open)
                    latencies.append(await conn.send(sender_addr, [target.recipient], payloads[i]))
                    await conn.quit()
                    conn = None
                    sessions.append(time.monotonic() - t_open)
                except (SMTPReplyError, *NET_ERRORS) as exc:
                    fail(f"{type(exc).__name__}: {exc}")
                finally:
                    if conn is not None:
                        await conn.close()

        connect_s = None
        spread: dict[str, int] | None = None
        if mode == "ingest":
            t_c = time.monotonic()
            opened = await asyncio.gather(
                *[open_smtp(target, ctx, p.io_timeout_s) for _ in range(concurrency)],
                return_exceptions=True,
            )
            connect_s = time.monotonic() - t_c
            conns: list[SMTPConnection | None] = []
            for o in opened:
                if isinstance(o, BaseException):
                    fail(f"connect: {type(o).__name__}: {o}")
                    conns.append(None)
                else:
                    conns.append(o)
            if all(c is None for c in conns):
                return {
                    "complete": False,
                    "error": "no SMTP connection could be opened",
                    **_errors_summary(errors),
                }
            if node_of is not None:
                assert target.smtp is not None
                smtp_port = target.smtp.port
                holders = [node_of(smtp_port, local_port(c.writer)) for c in conns if c is not None]
                spread = {}
                for h in holders:
                    spread[h or "unknown"] = spread.get(h or "unknown", 0) + 1
        cpu = procs.CpuMeter()
        t0 = time.monotonic()
        send_deadline = t0 + p.send_timeout_s
        if mode == "ingest":
            await asyncio.gather(*[reused_worker(c) for c in conns])
        else:
            await asyncio.gather(*[storm_worker() for _ in range(concurrency)])
        t_accept = time.monotonic()
        accepted = len(latencies)
        filed_at, filed = await wait_filed(
            reader, target.inbox, base + accepted, p.filing_timeout_s
        )
        t_end = filed_at if filed_at is not None else time.monotonic()
        cpu_info = cpu.stop(t_end - t0)
        filed_new = max(0, filed - base)
        complete = filed_at is not None and accepted == n
        out: dict[str, Any] = {
            "messages": n,
            "inbox_before": base,
            "size_kib": p.size_kib,
            "connections": concurrency,
            "accepted": accepted,
            "filed": min(filed_new, accepted),
            "complete": complete,
            "msgs_per_s": round(min(filed_new, accepted) / (t_end - t0), 1) if t_end > t0 else None,
            "accepted_msgs_per_s": round(accepted / (t_accept - t0), 1) if t_accept > t0 else None,
            "filing_lag_ms": round((t_end - t_accept) * 1000, 1),
            "duration_s": round(t_end - t0, 3),
            **latency_summary(latencies, "data_to_250"),
        }
        if mode == "storm":
            out.update(latency_summary(handshakes, "handshake"))
            out.update(latency_summary(sessions, "session"))
        if connect_s is not None:
            out["connect_all_ms"] = round(connect_s * 1000, 1)
        if mode == "ingest" and spread is not None:
            out["connections_by_node"] = dict(sorted(spread.items()))
        out.update(cpu_info)
        out.update(_errors_summary(errors))
        return out
    finally:
        await reader.logout()


# -- 3. IMAP on a large folder --------------------------------------------------------------------
_FETCH_SEQ = re.compile(rb"^\* (\d+) FETCH", re.I)


async def imap_large_folder(target: Target, p: Params, run: Run) -> dict[str, Any]:
    assert target.reader is not None
    n = p.imap_messages
    prefix = target.subject_prefix(target.recipient)
    factory = functools.partial(
        corpus.folder_message,
        subject_prefix=prefix,
        recipient=target.recipient or "greffe@justice.test",
    )
    t = time.monotonic()
    # NotImplementedError propagates: the runner reports the workload as skipped.
    mailbox = await asyncio.to_thread(target.populate, "Bench100k", n, message_factory=factory)
    populate_s = time.monotonic() - t
    expected_hits = math.ceil(n / 100)
    out: dict[str, Any] = {"messages": n, "populate_s": round(populate_s, 2), "mailbox": mailbox}
    notes: list[str] = []
    long = max(p.io_timeout_s, 600.0)  # the first SELECT of 100k unindexed messages can be slow

    async def timed(coro: Awaitable[Any]) -> tuple[float, Any]:
        t0 = time.monotonic()
        res = await coro
        return (time.monotonic() - t0) * 1000, res

    c1 = await open_imap(target, target.reader, long)
    try:
        ms, info = await timed(c1.select(mailbox))
        out["select_first_ms"] = round(ms, 2)
        exists = info.get("exists", 0)
        out["exists"] = exists
        if exists != n:
            notes.append(f"SELECT reported {exists} messages, expected {n}")
    finally:
        await c1.logout()

    c2 = await open_imap(target, target.reader, long)
    try:
        ms, info = await timed(c2.select(mailbox))
        out["select_ms"] = round(ms, 2)  # second SELECT, fresh session, index warm
        exists = info.get("exists", exists)
        lo = max(1, exists - 49)

        async def repeat(name: str, cmd: str, check: Callable[[list[bytes]], str | None]) -> None:
            times: list[float] = []
            for _ in range(max(1, p.imap_repeats)):
                ms2, resp = await timed(c2.command(cmd, timeout=long))
                times.append(ms2)
                problem = check(resp.untagged)
                if problem and problem not in notes:
                    notes.append(problem)
            out[f"{name}_first_ms"] = round(times[0], 2)
            out[f"{name}_ms"] = round(median(times[1:] or times) or 0.0, 2)

        def check_fetch(untagged: list[bytes]) -> str | None:
            got = sum(1 for u in untagged if _FETCH_SEQ.match(u))
            if got != min(50, exists):
                return f"FETCH returned {got} envelopes"
            if exists == n and f"numero {n - 1}".encode() not in b"\n".join(untagged):
                return f"the last message is not message {n - 1}: populate() did not keep the order"
            return None

        await repeat("fetch_envelopes", f"FETCH {lo}:{exists} (UID FLAGS ENVELOPE)", check_fetch)

        def check_search(untagged: list[bytes]) -> str | None:
            hits = 0
            for u in untagged:
                if u.upper().startswith(b"* SEARCH"):
                    hits += len(u.split()) - 2
                elif u.upper().startswith(b"* ESEARCH"):
                    m = re.search(rb"COUNT (\d+)", u, re.I)
                    hits += int(m.group(1)) if m else 0
            out["search_hits"] = hits
            return (
                None if hits == expected_hits else f"SEARCH found {hits}, expected {expected_hits}"
            )

        await repeat("search_subject", f"UID SEARCH SUBJECT {corpus.SEARCH_WORD}", check_search)
        await server_side_queries(c2, out, notes, exists=exists, repeats=p.imap_repeats, long=long)
    finally:
        await c2.logout()

    # Full resynchronisation with CONDSTORE, as a client with an empty cache does.
    c3 = await open_imap(target, target.reader, long)
    try:
        if "CONDSTORE" not in c3.capabilities:
            notes.append("server does not advertise CONDSTORE")
        t0 = time.monotonic()
        info = await c3.select(mailbox, condstore=True)
        resp = await c3.command("UID FETCH 1:* (UID FLAGS MODSEQ)", timeout=long)
        out["resync_condstore_ms"] = round((time.monotonic() - t0) * 1000, 2)
        got = sum(1 for u in resp.untagged if _FETCH_SEQ.match(u))
        out["resync_fetched"] = got
        if got != exists:
            notes.append(f"resync fetched {got} of {exists}")
        hms = info.get("highestmodseq")
        if hms is not None:
            # A client in sync asks this on every reconnection: timed like the
            # operations above (first, then the median of the repeats).
            times: list[float] = []
            for _ in range(max(1, p.imap_repeats)):
                t0 = time.monotonic()
                resp = await c3.command(
                    f"UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {hms})", timeout=long
                )
                times.append((time.monotonic() - t0) * 1000)
                if any(_FETCH_SEQ.match(u) for u in resp.untagged):
                    notes.append("CHANGEDSINCE highestmodseq returned messages")
                    break
            out["resync_changedsince_first_ms"] = round(times[0], 2)
            out["resync_changedsince_ms"] = round(median(times[1:] or times) or 0.0, 2)
        else:
            notes.append("no HIGHESTMODSEQ in SELECT (CONDSTORE) response")
        # The protocol's round trip on this session: the floor under the
        # figures above (TLS, loopback, the client's own parsing).
        floor: list[float] = []
        for _ in range(max(1, p.imap_repeats)):
            t0 = time.monotonic()
            await c3.command("NOOP", timeout=long)
            floor.append((time.monotonic() - t0) * 1000)
        out["noop_ms"] = round(median(floor) or 0.0, 2)
    except IMAPError as exc:
        notes.append(f"CONDSTORE resync failed: {exc}")
    finally:
        await c3.logout()
    await qresync_reconnect(target, mailbox, out, notes, exists=exists, p=p, long=long)
    out["notes"] = notes
    out["complete"] = not notes
    return out


# -- 3b. what servers answer themselves: SORT, THREAD, BODY/TEXT search, QRESYNC ----------------
# A server that does not advertise the extension, or answers NO/BAD, is
# recorded under "unsupported" (with why): not an error, so that the bench
# runs the same before and after a server gains the extension.

_SORT_LINE = re.compile(rb"^\* SORT\b(.*)$", re.I)
_ESEARCH_ALL = re.compile(rb"\bALL ([0-9:,]+)", re.I)
_THREAD_LINE = re.compile(rb"^\* THREAD\b(.*)$", re.I)
_VANISHED = re.compile(rb"^\* VANISHED\b", re.I)
# Slow scans (SEARCH BODY on 100,000 messages takes seconds on a server
# without a full-text index) are repeated fewer times than the rest.
SLOW_REPEATS = 5
QRESYNC_CHANGES = 1_000


def unsupported(out: dict[str, Any], name: str, why: str) -> None:
    out.setdefault("unsupported", {})[name] = why
    out[f"{name}_ms"] = None


def _uid_count(untagged: list[bytes], line: re.Pattern[bytes]) -> int:
    n = 0
    for u in untagged:
        m = line.match(u)
        if m:
            n += len(m.group(1).split())
    return n


def _thread_count(untagged: list[bytes]) -> tuple[int, int]:
    """(threads, messages) of a THREAD response: top-level groups and numbers."""
    for u in untagged:
        m = _THREAD_LINE.match(u)
        if m:
            body = m.group(1)
            depth = threads = 0
            for ch in body:
                if ch == ord("("):
                    if depth == 0:
                        threads += 1
                    depth += 1
                elif ch == ord(")"):
                    depth -= 1
            return threads, len(re.findall(rb"\d+", body))
    return 0, 0


async def server_side_queries(
    conn: IMAPConnection,
    out: dict[str, Any],
    notes: list[str],
    *,
    exists: int,
    repeats: int,
    long: float,
) -> None:
    """UID SORT (DATE), UID SORT (SUBJECT), UID THREAD REFERENCES, UID SEARCH BODY/TEXT."""
    body_hits = len(range(50, exists, 100))

    async def timed_repeats(
        name: str,
        cmd: str,
        needs: str | None,
        check: Callable[[list[bytes]], str | None],
        times_wanted: int,
    ) -> None:
        if needs is not None and needs not in conn.capabilities:
            unsupported(out, name, f"{needs} not advertised")
            return
        times: list[float] = []
        for _ in range(max(1, times_wanted)):
            t0 = time.monotonic()
            resp = await conn.command(cmd, check=False, timeout=long)
            ms = (time.monotonic() - t0) * 1000
            if resp.status != "OK":
                unsupported(out, name, f"answered {resp.status} {resp.text[:120]}")
                return
            times.append(ms)
            problem = check(resp.untagged)
            if problem:
                if problem not in notes:
                    notes.append(f"{name}: {problem}")
                break
        out[f"{name}_first_ms"] = round(times[0], 2)
        out[f"{name}_ms"] = round(median(times[1:] or times) or 0.0, 2)

    def check_sort(untagged: list[bytes]) -> str | None:
        got = _uid_count(untagged, _SORT_LINE)
        return None if got == exists else f"SORT returned {got} of {exists} messages"

    def check_sort_date(untagged: list[bytes]) -> str | None:
        problem = check_sort(untagged)
        if problem:
            return problem
        # Dates grow with the message number, and so do UIDs: sorted by date
        # is ascending UIDs.
        uids = [int(x) for u in untagged if (m := _SORT_LINE.match(u)) for x in m.group(1).split()]
        return None if uids == sorted(uids) else "SORT (DATE) is not in date order"

    def check_thread(untagged: list[bytes]) -> str | None:
        threads, messages = _thread_count(untagged)
        want = -(-exists // corpus.THREAD_SIZE)
        if messages != exists or threads != want:
            return (
                f"THREAD gave {threads} threads of {messages} messages, expected {want} of {exists}"
            )
        return None

    def check_body(untagged: list[bytes]) -> str | None:
        hits = 0
        for u in untagged:
            if u.upper().startswith(b"* SEARCH"):
                hits += len(u.split()) - 2
            elif u.upper().startswith(b"* ESEARCH"):
                m = re.search(rb"COUNT (\d+)", u, re.I)
                hits += int(m.group(1)) if m else 0
        return None if hits == body_hits else f"found {hits}, expected {body_hits}"

    slow = min(repeats, SLOW_REPEATS)
    await timed_repeats(
        "sort_date", "UID SORT (DATE) US-ASCII ALL", "SORT", check_sort_date, repeats
    )
    await timed_repeats(
        "sort_subject", "UID SORT (SUBJECT) US-ASCII ALL", "SORT", check_sort, repeats
    )
    await timed_repeats(
        "thread_references",
        "UID THREAD REFERENCES US-ASCII ALL",
        "THREAD=REFERENCES",
        check_thread,
        slow,
    )
    await timed_repeats(
        "search_body", f"UID SEARCH BODY {corpus.BODY_WORD}", None, check_body, slow
    )
    await timed_repeats(
        "search_text", f"UID SEARCH TEXT {corpus.BODY_WORD}", None, check_body, slow
    )


async def qresync_reconnect(
    target: Target,
    mailbox: str,
    out: dict[str, Any],
    notes: list[str],
    *,
    exists: int,
    p: Params,
    long: float,
) -> None:
    """A client reconnecting with QRESYNC (RFC 7162) after 1,000 flag changes made by another.

    Timed: SELECT mailbox (QRESYNC (uidvalidity modseq)) until its tagged OK,
    the server sending the 1,000 changed messages' FETCH (and any VANISHED).
    Each repeat makes 1,000 new changes first (\\Flagged set, then cleared).
    """
    assert target.reader is not None
    changes = min(QRESYNC_CHANGES, max(1, exists // 2))
    out["qresync_changes"] = changes
    writer = await open_imap(target, target.reader, long)
    try:
        if "QRESYNC" not in writer.capabilities:
            unsupported(out, "qresync_reconnect", "QRESYNC not advertised")
            return
        enabled = await writer.command("ENABLE QRESYNC", check=False)
        if enabled.status != "OK":
            unsupported(out, "qresync_reconnect", f"ENABLE QRESYNC answered {enabled.status}")
            return
        info = await writer.select(mailbox)
        validity = info.get("uidvalidity")
        if validity is None or info.get("highestmodseq") is None:
            unsupported(out, "qresync_reconnect", "no UIDVALIDITY/HIGHESTMODSEQ in SELECT")
            return
        # Every other message from the middle of the folder: 1,000 changes
        # spread over 2,000 UIDs (the sequence numbers of a fresh SELECT).
        first = max(1, exists // 2 - changes)
        seqs = ",".join(str(first + 2 * k) for k in range(changes))
        times: list[float] = []
        for r in range(max(1, min(p.imap_repeats, SLOW_REPEATS))):
            before = await writer.select(mailbox)
            modseq = before.get("highestmodseq")
            sign = "+" if r % 2 == 0 else "-"
            stored = await writer.command(
                f"STORE {seqs} {sign}FLAGS.SILENT (\\Flagged)", check=False, timeout=long
            )
            if stored.status != "OK":
                unsupported(out, "qresync_reconnect", f"STORE answered {stored.status}")
                return
            reader = await open_imap(target, target.reader, long)
            try:
                await reader.command("ENABLE QRESYNC")
                t0 = time.monotonic()
                resp = await reader.command(
                    f"SELECT {quote(mailbox)} (QRESYNC ({validity} {modseq}))",
                    check=False,
                    timeout=long,
                )
                ms = (time.monotonic() - t0) * 1000
            finally:
                await reader.logout()
            if resp.status != "OK":
                unsupported(out, "qresync_reconnect", f"SELECT (QRESYNC) answered {resp.status}")
                return
            fetched = sum(1 for u in resp.untagged if _FETCH_SEQ.match(u))
            if fetched != changes:
                notes.append(f"QRESYNC reconnect got {fetched} FETCH, expected {changes}")
                break
            times.append(ms)
        if times:
            out["qresync_reconnect_first_ms"] = round(times[0], 2)
            out["qresync_reconnect_ms"] = round(median(times[1:] or times) or 0.0, 2)
    except IMAPError as exc:
        unsupported(out, "qresync_reconnect", f"refused: {exc}")
    finally:
        await writer.logout()


# -- 4. push latency ------------------------------------------------------------------------------
_MSGID = re.compile(rb"Message-ID:\s*(<[^>\r\n]+>)", re.I)


async def push(
    target: Target, p: Params, run: Run, *, node_of: NodeOf | None = None
) -> dict[str, Any]:
    """``node_of`` given: the probes are submitted on another node than the one
    holding the reader's IDLE session (push across nodes)."""
    assert target.sender is not None and target.reader is not None
    sender_addr = target.sender.address
    duration = p.push_duration_s
    n_bg = int(p.push_rate * duration)
    n_probe = max(1, int(p.push_probe_rate * duration))
    maker = run.maker(p.size_kib)
    tag = f"push{int(time.time() * 1000) % 10**8}"
    bg_prefix = target.subject_prefix(target.background_recipient)
    probe_prefix = target.subject_prefix(target.recipient)
    bg_payloads = [
        maker.make(
            tag=tag + "bg",
            i=i,
            sender=sender_addr,
            recipient=target.background_recipient,
            subject_prefix=bg_prefix,
        )[1]
        for i in range(n_bg)
    ]
    probes = [
        maker.make(
            tag=tag + "probe",
            i=i,
            sender=sender_addr,
            recipient=target.recipient,
            subject_prefix=probe_prefix,
        )
        for i in range(n_probe)
    ]
    ctx = target.client_context(target.sender)
    reader = await open_imap(target, target.reader, p.io_timeout_s)
    errors: list[str] = []
    bg_done = 0
    probe_sent: dict[str, float] = {}
    try:
        info = await reader.select(target.inbox)
        n0 = info.get("exists", 0)
        await reader.idle_start()
        conns = [
            await open_smtp(target, ctx, p.io_timeout_s) for _ in range(max(1, p.push_connections))
        ]
        placement: dict[str, Any] = {}
        if node_of is None:
            probe_conn = await open_smtp(target, ctx, p.io_timeout_s)
        else:
            probe_conn, placement = await _open_probe_elsewhere(target, ctx, p, reader, node_of)
        cpu = procs.CpuMeter()
        t0 = time.monotonic() + 0.2
        hard_end = t0 + duration * 2 + 10  # loops stop here whatever happens

        async def bg_worker(k: int, conn: SMTPConnection) -> None:
            nonlocal bg_done
            for i in range(k, n_bg, len(conns)):
                due = t0 + i / p.push_rate
                now = time.monotonic()
                if now > hard_end or len(errors) >= p.max_errors:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                try:
                    await conn.send(sender_addr, [target.background_recipient], bg_payloads[i])
                    bg_done += 1
                except (SMTPReplyError, *NET_ERRORS) as exc:
                    errors.append(f"background: {type(exc).__name__}: {exc}")
                    if not isinstance(exc, SMTPReplyError):
                        break
            await conn.quit()

        async def probe_worker() -> None:
            for i, (mid, payload) in enumerate(probes):
                due = t0 + (i + 0.5) / p.push_probe_rate
                now = time.monotonic()
                if now > hard_end or len(errors) >= p.max_errors:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                try:
                    await probe_conn.send(sender_addr, [target.recipient], payload)
                    probe_sent[mid] = time.monotonic()
                except (SMTPReplyError, *NET_ERRORS) as exc:
                    errors.append(f"probe: {type(exc).__name__}: {exc}")
                    if not isinstance(exc, SMTPReplyError):
                        break
            await probe_conn.quit()

        await asyncio.gather(probe_worker(), *[bg_worker(k, c) for k, c in enumerate(conns)])
        t_sent = time.monotonic()
        cpu_info = cpu.stop(t_sent - t0)
        # Give the last notifications time to arrive (bounded).
        settle_deadline = time.monotonic() + max(10.0, p.io_timeout_s)
        last_change = time.monotonic()
        last_max = 0
        while time.monotonic() < settle_deadline:
            cur = max((e[0] for e in reader.idle_events), default=n0)
            if cur != last_max:
                last_max, last_change = cur, time.monotonic()
            if cur >= n0 + len(probe_sent) and time.monotonic() - last_change > 0.5:
                break
            await asyncio.sleep(0.05)
        events = list(reader.idle_events)
        await reader.idle_stop()
        # Map sequence numbers to Message-IDs, then each probe to its first notification.
        seq_mid: dict[int, str] = {}
        final_exists = max((e[0] for e in events), default=n0)
        if final_exists > n0:
            resp = await reader.command(
                f"FETCH {n0 + 1}:{final_exists} (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
                timeout=120,
            )
            for u in resp.untagged:
                m = _FETCH_SEQ.match(u)
                m2 = _MSGID.search(u)
                if m and m2:
                    seq_mid[int(m.group(1))] = m2.group(1).decode()
        mid_seq = {v: k for k, v in seq_mid.items()}
        lat: list[float] = []
        for mid, t250 in probe_sent.items():
            seq = mid_seq.get(mid)
            if seq is None:
                continue
            t_note = next((t for (num, t) in events if num >= seq), None)
            if t_note is not None:
                lat.append(t_note - t250)
        notified = len(lat)
        out: dict[str, Any] = {
            "background_rate_target": p.push_rate,
            "background_rate_achieved": round(bg_done / max(1e-9, t_sent - t0), 1),
            "background_sent": bg_done,
            "inbox_before": n0,
            "probes_sent": len(probe_sent),
            "probes_notified": notified,
            "complete": notified == len(probes) and bg_done == n_bg,
            **latency_summary(lat, "notify"),
            "notify_min_ms": round(min(lat) * 1000, 3) if lat else None,
            "duration_s": round(t_sent - t0, 2),
            **placement,
        }
        out.update(cpu_info)
        out.update(_errors_summary(errors))
        return out
    finally:
        await reader.close()


# SO_REUSEPORT spreads connections by a hash of the addresses: each new one has
# about an even chance of landing on another worker; 30 misses in a row is a
# placement the bench cannot make (reported, not hidden).
PLACEMENT_TRIES = 30


async def _open_probe_elsewhere(
    target: Target, ctx: ssl.SSLContext, p: Params, reader: IMAPConnection, node_of: NodeOf
) -> tuple[SMTPConnection, dict[str, Any]]:
    """An SMTP connection for the probes on another node than the reader's IDLE
    session; and where each is (``cross_node`` False or None when not achieved)."""
    assert target.imap is not None and target.smtp is not None
    reader_node = node_of(target.imap.port, local_port(reader.writer))
    conn = await open_smtp(target, ctx, p.io_timeout_s)
    probe_node = node_of(target.smtp.port, local_port(conn.writer))
    tries = 1
    while reader_node is not None and probe_node == reader_node and tries < PLACEMENT_TRIES:
        await conn.quit()
        conn = await open_smtp(target, ctx, p.io_timeout_s)
        probe_node = node_of(target.smtp.port, local_port(conn.writer))
        tries += 1
    cross = None if reader_node is None or probe_node is None else probe_node != reader_node
    return conn, {
        "reader_node": reader_node,
        "probe_node": probe_node,
        "cross_node": cross,
        "placement_tries": tries,
    }


# -- 5. memory with idle IMAP sessions ------------------------------------------------------------
async def memory(target: Target, p: Params, run: Run) -> dict[str, Any]:
    assert target.reader is not None
    reader_id = target.reader
    await asyncio.to_thread(target.prepare_memory)
    roots = target.memory_root_pids()
    if not roots:
        return {"complete": False, "error": "target exposes no process to measure"}
    # Warm-up: one session opened and closed first, so that one-off lazy
    # initialisation (imports, caches, the first TLS context) is in the baseline.
    try:
        warm = await open_imap(target, target.reader, p.io_timeout_s)
        await warm.select(target.inbox)
        await warm.logout()
    except (IMAPError, *NET_ERRORS) as exc:
        return {
            "complete": False,
            "error": f"first IMAP session failed: {type(exc).__name__}: {exc}",
        }
    # The restarted target's helper processes still start (Palais's filing
    # process imports for a second or two once the ports answer): the
    # baseline waits for a quiet machine, or their growth is counted as the
    # sessions'.
    await asyncio.to_thread(procs.settle, 30.0)
    await asyncio.sleep(1.0)
    exclude = target.memory_exclude
    before = procs.memory(roots, exclude)
    sessions: list[IMAPConnection] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(max(1, p.memory_open_concurrency))
    deadline = time.monotonic() + max(60.0, p.memory_sessions * 0.2)

    async def one() -> None:
        if time.monotonic() > deadline or len(errors) >= p.max_errors:
            return
        async with sem:
            if time.monotonic() > deadline or len(errors) >= p.max_errors:
                return
            conn = None
            try:
                conn = await open_imap(target, reader_id, p.io_timeout_s)
                await conn.select(target.inbox)
                await conn.idle_start()
                sessions.append(conn)
            except (IMAPError, *NET_ERRORS) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    await conn.close()

    t0 = time.monotonic()
    try:
        await asyncio.gather(*[one() for _ in range(p.memory_sessions)])
        open_s = time.monotonic() - t0
        await asyncio.sleep(2.0)
        after = procs.memory(roots, exclude)
        alive = sum(1 for s in sessions if not s.reader.at_eof())
    finally:
        await asyncio.gather(*[s.close() for s in sessions], return_exceptions=True)
    n = max(1, len(sessions))
    rss_delta = after.rss_kib - before.rss_kib
    pss_delta = after.pss_kib - before.pss_kib
    return {
        "sessions_requested": p.memory_sessions,
        "sessions": len(sessions),
        "sessions_alive": alive,
        "complete": len(sessions) == p.memory_sessions,
        "rss_delta_mib": round(rss_delta / 1024, 2),
        "pss_delta_mib": round(pss_delta / 1024, 2),
        "per_session_rss_kib": round(rss_delta / n, 1),
        "per_session_pss_kib": round(pss_delta / n, 1),
        "rss_total_mib": round(after.rss_kib / 1024, 2),
        "baseline_rss_mib": round(before.rss_kib / 1024, 2),
        "open_all_s": round(open_s, 2),
        "excluded_processes": sorted(exclude),
        "before": before.as_dict(),
        "after": after.as_dict(),
        **_errors_summary(errors),
    }


# -- 6. receipts (Palais only) --------------------------------------------------------------------
_SEARCH = re.compile(rb"^\* SEARCH\b(.*)$", re.I)


def receipts_read_limit(p: Params) -> float:
    """Wall-clock bound of the first-read phase (each read also has its own timeout)."""
    return max(30.0, 0.5 * p.receipts_reads)


async def receipts_workload(target: Target, p: Params, run: Run) -> dict[str, Any]:
    """Receipts issued during an ingest, first-read receipt latency, receipt bytes on disk.

    1. An ingest of ``receipts_n`` messages (as ``ingest``): deposit receipts
       counted in the evidence log (and as mails in the sender's Accusés de
       réception, by STATUS), per second of the ingest's filed duration.
    2. The reader FETCHes BODY[] of up to ``receipts_reads`` of those messages,
       unread, one at a time, while the sender IDLEs on its Accusés de
       réception: latency from sending the FETCH to the sender's ``* N EXISTS``
       of the read receipt (and to the FETCH's tagged OK).
    3. The bytes the receipts added: receipt mails, evidence rows, tree heads.
    """
    if target.name != "palais":
        raise NotImplementedError(f"{target.name} issues no receipts")
    assert target.sender is not None and target.reader is not None
    found_dir = getattr(target, "dir", None)  # PalaisTarget's instance directory
    instance = found_dir if isinstance(found_dir, Path) else None
    db = receipts.database(instance) if instance is not None else None
    box = receipts.SENDER_RECEIPTS_BOX
    n = p.receipts_n or p.n
    notes: list[str] = []
    errors: list[str] = []
    if db is None:
        notes.append("no palais.db in the instance: counted by IMAP STATUS only, no byte figures")
    sender = await open_imap(target, target.sender, p.io_timeout_s)
    reader = await open_imap(target, target.reader, p.io_timeout_s)
    try:
        # -- 1. deposit receipts during an ingest
        first_uid = (await reader.status(target.inbox, "UIDNEXT")).get("uidnext", 1)
        mails_before = await inbox_count(sender, box)
        log_before = await asyncio.to_thread(receipts.log_size, db) if db else 0
        disk_before = await asyncio.to_thread(receipts.instance_bytes, instance) if instance else 0
        load = await _smtp_load(target, p, run, mode="ingest", n=n, concurrency=p.concurrency)
        if "error" in load:
            return {"complete": False, "error": f"ingest: {load['error']}", "ingest": load}
        duration = float(load["duration_s"])
        disk_after = await asyncio.to_thread(receipts.instance_bytes, instance) if instance else 0
        mails = await inbox_count(sender, box) - mails_before
        out: dict[str, Any] = {
            "messages": n,
            "ingest_msgs_per_s": load["msgs_per_s"],
            "ingest_duration_s": duration,
            "accepted": load["accepted"],
            "filed": load["filed"],
            "receipt_mails": mails,
        }
        issued = mails
        log_mid = log_before
        if db is not None:
            made = await asyncio.to_thread(receipts.since, db, log_before)
            log_mid = log_before + made.deposits + made.reads
            issued = made.deposits
            per = max(1, made.deposits)
            out.update(
                deposit_receipts=made.deposits,
                receipt_mail_bytes_per_msg=round(made.mail_bytes / per),
                evidence_bytes_per_msg=round(made.evidence_bytes / per),
                tree_heads=made.tree_heads,
                tree_head_bytes_per_msg=round(made.tree_head_bytes / per, 1),
                receipt_bytes_per_msg=round(
                    (made.mail_bytes + made.evidence_bytes + made.tree_head_bytes) / per
                ),
                message_bytes_per_msg=round(made.message_bytes / per),
                store_growth_per_msg_bytes=round(
                    (disk_after - disk_before) / max(1, load["filed"])
                ),
            )
            if made.deposits != load["accepted"]:
                notes.append(f"{made.deposits} deposit receipts for {load['accepted']} messages")
        if mails != load["accepted"]:
            notes.append(f"{mails} receipt mails for the sender, {load['accepted']} accepted")
        out["receipts_per_s"] = round(issued / duration, 1) if duration > 0 else None

        # -- 2. first reads, one at a time, each awaited as a read receipt on the sender's side
        await reader.select(target.inbox)
        found = await reader.command(f"UID SEARCH UID {first_uid}:* UNSEEN")
        uids = sorted(
            uid
            for line in found.untagged
            if (m := _SEARCH.match(line))
            for uid in map(int, m.group(1).split())
            if uid >= first_uid
        )[: p.receipts_reads]
        if len(uids) < p.receipts_reads:
            notes.append(f"{len(uids)} unread messages to read, {p.receipts_reads} wanted")
        known = (await sender.select(box)).get("exists", 0)
        await sender.idle_start()
        to_receipt: list[float] = []
        to_ok: list[float] = []
        deadline = time.monotonic() + receipts_read_limit(p)
        seen_events = 0
        for uid in uids:
            if time.monotonic() > deadline or len(errors) >= p.max_errors:
                notes.append(f"read phase stopped after {len(to_ok)} reads")
                break
            want = known + 1  # the sender's Accusés de réception, with this read's receipt
            t0 = time.monotonic()
            try:
                await reader.command(f"UID FETCH {uid} BODY[]", timeout=p.io_timeout_s)
            except IMAPError as exc:
                errors.append(f"FETCH: {exc}")
                continue
            to_ok.append(time.monotonic() - t0)
            wait_until = time.monotonic() + p.io_timeout_s
            t_note: float | None = None
            while t_note is None and time.monotonic() < wait_until:
                events = sender.idle_events
                for num, t in events[seen_events:]:
                    known = max(known, num)
                    if t_note is None and num >= want:
                        t_note = t
                seen_events = len(events)
                if t_note is None:
                    await asyncio.sleep(0.001)
            if t_note is None:
                errors.append(f"no read receipt seen within {p.io_timeout_s:.0f} s (UID {uid})")
            else:
                to_receipt.append(t_note - t0)
        await sender.idle_stop()
        out.update(
            reads=len(to_ok),
            read_receipts_seen=len(to_receipt),
            **latency_summary(to_receipt, "read_receipt"),
            **latency_summary(to_ok, "read_fetch_ok"),
        )
        if db is not None:
            read = await asyncio.to_thread(receipts.since, db, log_mid)
            out["read_receipts_logged"] = read.reads
            if read.reads:
                out["read_receipt_bytes"] = round(
                    (read.mail_bytes + read.evidence_bytes + read.tree_head_bytes) / read.reads
                )
            if read.reads != len(to_ok):
                notes.append(f"{read.reads} read receipts logged for {len(to_ok)} first reads")
        out["complete"] = (
            bool(load.get("complete"))
            and not notes
            and len(to_receipt) == len(uids) == p.receipts_reads
        )
        out["notes"] = notes
        out.update(_errors_summary(errors + list(load.get("error_sample", []))))
        out["errors"] = len(errors) + int(load.get("errors", 0))
        return out
    finally:
        await asyncio.gather(sender.logout(), reader.logout(), return_exceptions=True)


WORKLOADS: dict[str, Callable[[Target, Params, Run], Awaitable[dict[str, Any]]]] = {
    "ingest": ingest,
    "storm": storm,
    "imap": imap_large_folder,
    "push": push,
    "memory": memory,
    "receipts": receipts_workload,
}
