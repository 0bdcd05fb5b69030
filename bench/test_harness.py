"""Fast, offline tests of the harness's own logic (no servers, no root)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bench import corpus, nodes, procs, receipts, report, stats
from bench.imap_client import IMAPConnection, encode_mutf7
from bench.pki import BenchPKI


def test_percentile_and_ratio() -> None:
    assert stats.percentile([], 50) is None
    assert stats.percentile([3.0], 99) == 3.0
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.ratio(1, 0) is None
    assert stats.ratio(0.1, 338.0) == 0.0002959  # small ratios keep significant digits
    s = stats.latency_summary([0.010, 0.020, 0.030], "x")
    assert s["x_p50_ms"] == 20.0 and s["x_max_ms"] == 30.0


def test_aggregate_and_ratios() -> None:
    agg = report.aggregate([{"a": 1.0, "ok": True, "s": "x"}, {"a": 3.0, "ok": False, "s": "y"}])
    assert agg["a"] == 2.0 and agg["ok"] is False and len(agg["rounds"]) == 2
    r = report.ratios(
        {"a": 2.0, "b": "t", "c": True, "cpu_busy_before_pct": 3.0},
        {"a": 4.0, "b": "u", "c": True, "cpu_busy_before_pct": 12.0},
    )
    assert r == {"a": 0.5}  # how busy the machine was before is no server's figure
    assert report.ratios({"skipped": "why"}, {"a": 1}) == {}


def test_markdown_renders_skips() -> None:
    doc = {
        "targets": {
            "palais": {"status": "skipped", "reason": "nope"},
            "peer": {"status": "ok", "label": "P"},
        },
        "ingest": {"palais": {"skipped": "nope"}, "peer": {"msgs_per_s": 200.0}, "ratio": {}},
    }
    md = report.markdown(doc)
    assert "palais skipped:** nope" in md
    assert "| ingest | filed & readable, msg/s | higher | – | 200 | – |" in md


def test_markdown_receipts_palais_only() -> None:
    doc = {
        "targets": {"palais": {"status": "ok"}, "peer": {"status": "ok"}},
        "receipts": {
            "palais": {"receipts_per_s": 600.0, "read_receipt_p50_ms": 12.0},
            "peer": {"skipped": "n/a: Postfix + Dovecot issues no receipts"},
            "ratio": {},
        },
    }
    md = report.markdown(doc)
    assert "| receipts | deposit receipts issued during an ingest, per s | higher | 600 | n/a" in md
    assert "receipts / peer" not in md  # no note for a feature the peer lacks


def test_receipts_counted_in_the_log(tmp_path: Path) -> None:
    db = tmp_path / "palais.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE message (id INTEGER PRIMARY KEY, size INTEGER);"
        "CREATE TABLE evidence_log (position INTEGER PRIMARY KEY, evidence_id TEXT,"
        " events TEXT, about INTEGER, evidence TEXT, leaf_hash TEXT, receipt_message INTEGER);"
        "CREATE TABLE tree_head (size INTEGER PRIMARY KEY, document TEXT, signature TEXT);"
        "INSERT INTO message VALUES (1, 4000), (2, 6000), (3, 4000), (4, 6000), (5, 6500);"
        "INSERT INTO evidence_log VALUES (0, 'a', 'depot,remise', 1, 'é', 'h', 2),"
        " (1, 'b', 'depot,remise', 3, 'xy', 'h', 4), (2, 'c', 'premiere-lecture', 1, 'z', 'h', 5);"
        "INSERT INTO tree_head VALUES (1, 'd', 's'), (2, 'dd', 'ss'), (3, 'ddd', 'sss');"
    )
    conn.commit()
    conn.close()
    assert receipts.database(tmp_path) == db and receipts.database(tmp_path / "x") is None
    assert receipts.log_size(db) == 3
    made = receipts.since(db, 1)
    assert (made.deposits, made.reads, made.mail_bytes, made.message_bytes) == (1, 1, 12500, 4000)
    assert made.evidence_bytes == (2 + 1 + 1) + (1 + 1 + 1)  # evidence, id, leaf hash
    assert (made.tree_heads, made.tree_head_bytes) == (2, 10)
    assert receipts.since(db, 0).evidence_bytes == 2 + 1 + 1 + 7  # 'é' is two bytes
    assert receipts.instance_bytes(tmp_path) > 0


def test_corpus() -> None:
    maker = corpus.MessageMaker(4, "run")
    mid, payload = maker.make(tag="t", i=7, sender="a@x", recipient="b@y", subject_prefix="[1] ")
    assert mid in payload.decode() and b"Subject: [1] bench t 7\r\n" in payload
    assert 3900 <= len(payload) <= 4300
    assert b"\n." not in payload and payload.endswith(b"\r\n")
    assert corpus.SEARCH_WORD.encode() in corpus.folder_message(200)
    assert corpus.SEARCH_WORD.encode() not in corpus.folder_message(201)


def test_mutf7() -> None:
    assert encode_mutf7("INBOX") == "INBOX"
    assert encode_mutf7("Envoyés") == "Envoy&AOk-s"
    assert encode_mutf7("a&b") == "a&-b"


def test_pki(tmp_path: Path) -> None:
    pki = BenchPKI(tmp_path)
    files = pki.client("greffier1", email="greffier1@justice.test")
    assert files.cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"X509 CRL" in pki.ca_with_crl_file.read_bytes()


def test_imap_literal_parsing() -> None:
    async def go() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"* 1 FETCH (BODY[HEADER] {5}\r\nab\r\nc)\r\nB00001 OK done\r\n")
        reader.feed_eof()
        conn = IMAPConnection(reader, writer=None, timeout=5)  # type: ignore[arg-type]
        resp = await conn._collect("B00001", "FETCH", check=True)
        return resp.untagged

    assert asyncio.run(go()) == [b"* 1 FETCH (BODY[HEADER] {5}\r\nab\r\nc)"]


def test_smoke_judges_palais_only() -> None:
    from bench.__main__ import smoke_problems

    doc = {
        "targets": {"palais": {"status": "ok"}, "peer": {"status": "skipped", "reason": "no apt"}},
        "ingest": {"palais": {"complete": True}, "peer": {"skipped": "no apt"}},
        "imap": {"palais": {"complete": False, "notes": ["FETCH returned 3 envelopes"]}},
        "push": {"palais": {"skipped": "not implemented"}},
    }
    assert smoke_problems(doc, ["ingest"]) == []
    problems = smoke_problems(doc, ["ingest", "imap", "push", "memory"])
    assert [p.split(":")[0] for p in problems] == ["imap", "push", "memory"]
    assert smoke_problems({"targets": {}}, ["ingest"]) == ["palais did not run: not selected"]


def test_folder_body_word_and_threads() -> None:
    folder = [corpus.folder_message(i) for i in range(300)]
    with_word = [i for i, m in enumerate(folder) if corpus.BODY_WORD.encode() in m]
    assert with_word == [50, 150, 250]  # 1 %, in no message whose subject has SEARCH_WORD
    for i in with_word:
        head, _, body = folder[i].partition(b"\r\n\r\n")
        assert corpus.BODY_WORD.encode() not in head and corpus.BODY_WORD.encode() in body
    assert b"References" not in folder[20] and b"In-Reply-To" not in folder[20]
    assert b"References: <bench-folder-20@bench.invalid>\r\n" in folder[27]


def test_thread_and_sort_counting() -> None:
    from bench.workloads import _SORT_LINE, _thread_count, _uid_count

    assert _thread_count([b"* THREAD (1 (2)(3 4))(5)(6 7 8)"]) == (3, 8)
    assert _thread_count([b"* THREAD"]) == (0, 0)
    assert _uid_count([b"* SORT 3 1 2", b"* SORT 4"], _SORT_LINE) == 4


def test_markdown_cyrus_column_and_unsupported() -> None:
    doc = {
        "targets": {
            "palais": {"status": "ok", "label": "Palais"},
            "peer": {"status": "ok", "label": "D"},
            "cyrus": {"status": "ok", "label": "C"},
        },
        "imap": {
            "palais": {"sort_date_ms": None, "unsupported": {"sort_date": "SORT not advertised"}},
            "peer": {"sort_date_ms": 100.0},
            "cyrus": {"sort_date_ms": 78.0},
            "ratio": {},
        },
        "ingest": {
            "palais": {"msgs_per_s": 300.0},
            "peer": {"msgs_per_s": 200.0},
            "cyrus": {"skipped": "n/a: IMAP only"},
            "ratio": {"msgs_per_s": 1.5},
        },
    }
    md = report.markdown(doc)
    assert "| workload | figure | better | Palais | D | C | Palais/peer |" in md
    assert "| imap | UID SORT (DATE) (again), ms | lower | unsupported | 100 | 78.0 | – |" in md
    assert "| ingest | filed & readable, msg/s | higher | 300 | 200 | n/a | 1.50 |" in md
    assert "imap / palais: sort_date unsupported (SORT not advertised)" in md
    assert "ingest / cyrus" not in md


def test_proc_net_tcp_and_worker_node() -> None:
    from bench import procs

    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode\n"
        "   0: 0100007F:6F7D 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
        "     0        0 4242 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:6F7D 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000"
        "     0        0 5151 1 0000000000000000 20 4 30 10 -1\n"
        "   2: short line\n"
    )
    assert procs.parse_proc_net_tcp(text) == [(0x6F7D, 0, 4242), (0x6F7D, 0xA1B2, 5151)]
    argv = ["/usr/bin/python", "-m", "palais", "serve", "/d", "--node", "h-w2", "--reuse-port"]
    assert procs.node_from_cmdline(argv) == "h-w2"
    assert procs.node_from_cmdline(["palais", "serve", "--node=h-w1"]) == "h-w1"
    assert procs.node_from_cmdline(["palais", "serve", "/d"]) is None


def test_nodes_summary_ratio_and_targets() -> None:
    from bench import nodes

    def config(msgs: float, p99: float, cross: bool | None = None) -> dict[str, object]:
        push: dict[str, object] = {
            "complete": True,
            "notify_p50_ms": 1.0,
            "notify_p99_ms": p99,
            "background_rate_achieved": 200.0,
            "errors": 0,
        }
        if cross is not None:
            push["cross_node"] = cross
        return {"ingest": {"complete": True, "msgs_per_s": msgs, "errors": 0}, "push": push}

    out = nodes.summarize(
        {
            "sqlite_1w": config(300.0, 5.0),
            "pg_1w": config(100.0, 8.0),
            "pg_2w": config(160.0, 40.0, cross=True),
        }
    )
    assert out["pg_2w_over_1w"] == 1.6 and out["pg_2w_push_p99_ms"] == 40.0
    assert out["targets"]["scale_met"] is True and out["targets"]["push_met"] is True
    assert out["complete"] is True and out["notes"] == []
    # Not placed across workers: the push figure stays, but is neither judged nor complete.
    out = nodes.summarize(
        {
            "sqlite_1w": config(300.0, 5.0),
            "pg_1w": config(100.0, 8.0),
            "pg_2w": config(120.0, 40.0, cross=False),
        }
    )
    assert out["pg_2w_over_1w"] == 1.2 and out["targets"]["scale_met"] is False
    assert out["targets"]["push_met"] is None and out["complete"] is False
    # No PostgreSQL: SQLite's figures alone, the reason said.
    out = nodes.summarize(
        {
            "sqlite_1w": config(300.0, 5.0),
            "pg_1w": {"skipped": "no PostgreSQL: x"},
            "pg_2w": {"skipped": "no PostgreSQL: x"},
        }
    )
    assert out["sqlite_1w_msgs_per_s"] == 300.0 and out["pg_2w_over_1w"] is None
    assert (
        out["complete"] is False
        and "1 worker, PostgreSQL: skipped: no PostgreSQL: x" in (out["notes"])
    )


def test_nodes_rows_and_quick_mode() -> None:
    from bench import nodes
    from bench.__main__ import parse_args

    doc = {
        "targets": {"palais": {"status": "ok"}, "peer": {"status": "ok"}},
        "nodes": {
            "palais": nodes.summarize({}) | {"pg_2w_over_1w": 1.6, "pg_2w_push_p99_ms": 40.0},
            "peer": {"skipped": "n/a"},
            "ratio": {},
        },
    }
    md = report.markdown(doc)
    assert (
        "| nodes | ingest, 2 workers / 1 worker on PostgreSQL (target ≥ 1.5) | higher | 1.60 |"
        in md
    )
    assert "target < 100) | lower | 40.0 | n/a | n/a |" in md
    assert "nodes" not in parse_args(["--quick"]).only  # CI's quick run stays short
    assert "nodes" in parse_args([]).only
    assert parse_args(["--quick", "--only", "nodes"]).only == ["nodes"]


def test_nodes_configs_can_be_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import build_params as params
    from bench.__main__ import parse_args

    args = parse_args(["--only", "nodes", "--nodes-configs", "pg_1w, pg_2w"])
    assert params(args).nodes_configs == ("pg_1w", "pg_2w")
    assert params(parse_args(["--only", "nodes"])).nodes_configs == ()
    with pytest.raises(SystemExit):
        parse_args(["--nodes-configs", "pg_3w"])
    assert "--nodes-configs takes some of sqlite_1w, pg_1w, pg_2w" in capsys.readouterr().err
    # Those left out are reported skipped, not as a failed run.
    summary = nodes.summarize({"pg_1w": {"skipped": "not asked for (--nodes-configs)"}})
    assert "1 worker, PostgreSQL: skipped: not asked for" in " ".join(summary["notes"])


def test_postgres_version_order() -> None:
    from bench.pgserver import version_key

    assert max(["9.6", "15", "13"], key=version_key) == "15"


def test_settle_waits_for_a_quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter([95.0, 60.0, 4.0, 90.0])
    monkeypatch.setattr(procs, "cpu_busy_sample", lambda seconds=0.5: next(samples))
    assert procs.settle(60.0) == 4.0  # the third sample was quiet
    assert next(samples) == 90.0  # and none was taken after it


def test_settle_gives_up_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[float] = []

    def busy(seconds: float = 0.5) -> float:
        taken.append(seconds)
        return 80.0

    monkeypatch.setattr(procs, "cpu_busy_sample", busy)
    assert procs.settle(0.0) == 80.0  # still busy: said so, once the time ran out
    assert len(taken) == 1
