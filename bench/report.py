"""Results: machine description, aggregation, ratios, JSON and Markdown."""

from __future__ import annotations

import json
import os
import platform
import ssl
import sys
from pathlib import Path
from typing import Any

from .procs import QUIET_PCT
from .stats import median, ratio

# Figures shown in the Markdown table: (workload, key, label, better)
HEADLINE: list[tuple[str, str, str, str]] = [
    ("ingest", "msgs_per_s", "filed & readable, msg/s", "higher"),
    ("ingest", "accepted_msgs_per_s", "accepted (250), msg/s", "higher"),
    ("ingest", "data_to_250_p50_ms", "DATA end to 250, p50 ms", "lower"),
    ("ingest", "data_to_250_p99_ms", "DATA end to 250, p99 ms", "lower"),
    ("storm", "msgs_per_s", "filed & readable, msg/s", "higher"),
    ("storm", "accepted_msgs_per_s", "accepted (250), msg/s", "higher"),
    ("storm", "handshake_p50_ms", "connect+TLS+EHLO, p50 ms", "lower"),
    ("storm", "handshake_p99_ms", "connect+TLS+EHLO, p99 ms", "lower"),
    ("storm", "data_to_250_p50_ms", "DATA end to 250, p50 ms", "lower"),
    ("storm", "data_to_250_p99_ms", "DATA end to 250, p99 ms", "lower"),
    ("imap", "select_first_ms", "first SELECT (cold), ms", "lower"),
    ("imap", "select_ms", "second SELECT (new session), ms", "lower"),
    ("imap", "fetch_envelopes_first_ms", "FETCH last 50 ENVELOPE (first), ms", "lower"),
    ("imap", "fetch_envelopes_ms", "FETCH last 50 ENVELOPE (again), ms", "lower"),
    ("imap", "search_subject_first_ms", "UID SEARCH SUBJECT (first), ms", "lower"),
    ("imap", "search_subject_ms", "UID SEARCH SUBJECT (again), ms", "lower"),
    (
        "imap",
        "resync_condstore_ms",
        "full resync: SELECT (CONDSTORE) + UID FETCH 1:* (FLAGS MODSEQ), ms",
        "lower",
    ),
    (
        "imap",
        "resync_changedsince_ms",
        "UID FETCH 1:* CHANGEDSINCE highestmodseq (in sync), ms",
        "lower",
    ),
    ("imap", "sort_date_ms", "UID SORT (DATE) (again), ms", "lower"),
    ("imap", "sort_subject_ms", "UID SORT (SUBJECT) (again), ms", "lower"),
    ("imap", "thread_references_ms", "UID THREAD REFERENCES (again), ms", "lower"),
    ("imap", "search_body_ms", "UID SEARCH BODY word in 1 % (again), ms", "lower"),
    ("imap", "search_text_ms", "UID SEARCH TEXT word in 1 % (again), ms", "lower"),
    (
        "imap",
        "qresync_reconnect_ms",
        "reconnect: SELECT (QRESYNC) after 1,000 flag changes, ms",
        "lower",
    ),
    ("imap", "noop_ms", "NOOP round trip (the floor), ms", "info"),
    ("push", "notify_p50_ms", "250 to IDLE EXISTS, p50 ms", "lower"),
    ("push", "notify_p99_ms", "250 to IDLE EXISTS, p99 ms", "lower"),
    ("push", "background_rate_achieved", "background load achieved, msg/s", "info"),
    ("memory", "rss_total_mib", "RSS with the sessions open (whole server), MiB", "lower"),
    ("memory", "rss_delta_mib", "RSS added by the sessions, MiB", "lower"),
    ("memory", "per_session_rss_kib", "RSS per session, KiB", "lower"),
    ("memory", "pss_delta_mib", "PSS added by the sessions, MiB", "lower"),
    ("memory", "per_session_pss_kib", "PSS per session, KiB", "lower"),
    ("receipts", "receipts_per_s", "deposit receipts issued during an ingest, per s", "higher"),
    (
        "receipts",
        "read_receipt_p50_ms",
        "first FETCH BODY[] to the sender's IDLE EXISTS of the read receipt, p50 ms",
        "lower",
    ),
    (
        "receipts",
        "read_receipt_p99_ms",
        "first FETCH BODY[] to the sender's IDLE EXISTS of the read receipt, p99 ms",
        "lower",
    ),
    (
        "receipts",
        "receipt_bytes_per_msg",
        "receipt bytes stored per message (mail + evidence + tree heads)",
        "lower",
    ),
    ("nodes", "sqlite_1w_msgs_per_s", "ingest filed msg/s, 1 worker SQLite", "higher"),
    ("nodes", "pg_1w_msgs_per_s", "ingest filed msg/s, 1 worker PostgreSQL", "higher"),
    ("nodes", "pg_2w_msgs_per_s", "ingest filed msg/s, 2 workers PostgreSQL", "higher"),
    (
        "nodes",
        "pg_2w_over_1w",
        "ingest, 2 workers / 1 worker on PostgreSQL (target ≥ 1.5)",
        "higher",
    ),
    ("nodes", "sqlite_1w_push_p99_ms", "push 250 to IDLE EXISTS p99 ms, 1 worker SQLite", "lower"),
    (
        "nodes",
        "pg_1w_push_p99_ms",
        "push 250 to IDLE EXISTS p99 ms, 1 worker PostgreSQL",
        "lower",
    ),
    (
        "nodes",
        "pg_2w_push_p50_ms",
        "push p50 ms across nodes (IDLE on one worker, probes on the other)",
        "lower",
    ),
    (
        "nodes",
        "pg_2w_push_p99_ms",
        "push p99 ms across nodes (IDLE on one worker, probes on the other; target < 100)",
        "lower",
    ),
    (
        "nodes",
        "sqlite_1w_push_background_msgs_per_s",
        "push background load achieved msg/s, 1 worker SQLite",
        "info",
    ),
    (
        "nodes",
        "pg_1w_push_background_msgs_per_s",
        "push background load achieved msg/s, 1 worker PostgreSQL",
        "info",
    ),
    (
        "nodes",
        "pg_2w_push_background_msgs_per_s",
        "push background load achieved msg/s, 2 workers PostgreSQL",
        "info",
    ),
]
# Workloads only Palais runs (the peer has no such feature): its column says n/a.
PALAIS_ONLY = {"receipts", "nodes"}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return info


def base_versions() -> dict[str, str]:
    return {"python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several rounds: median of each number, all rounds kept."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {}
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r if k not in keys]
    for k in keys:
        vals = [r[k] for r in runs if k in r]
        if all(_is_num(v) for v in vals):
            m = median([float(v) for v in vals])
            out[k] = round(m, 3) if m is not None else None
        elif all(isinstance(v, bool) for v in vals):
            out[k] = all(vals)
        else:
            out[k] = vals[-1]
    out["rounds"] = runs
    return out


# Figures of the run's conditions, not of a server: no ratio.
_NOT_COMPARED = frozenset({"rounds", "cpu_busy_before_pct"})


def ratios(palais: dict[str, Any] | None, peer: dict[str, Any] | None) -> dict[str, float | None]:
    if not palais or not peer or "skipped" in palais or "skipped" in peer:
        return {}
    out: dict[str, float | None] = {}
    for k, v in palais.items():
        if k in _NOT_COMPARED or not _is_num(v) or not _is_num(peer.get(k)):
            continue
        out[k] = ratio(float(v), float(peer[k]))
    return out


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 1 or v == 0:
            return f"{v:.2f}"
        return f"{v:.2g}"
    return str(v)


def _unsupported(key: str, *sides: dict[str, Any]) -> bool:
    name = key.removesuffix("_ms")
    return any(name in (side.get("unsupported") or {}) for side in sides)


def _cell(key: str, value: Any, side: dict[str, Any]) -> str:
    """A figure, or "unsupported" where the server lacks the extension."""
    if value is None and _unsupported(key, side):
        return "unsupported"
    return _fmt(value)


def markdown(doc: dict[str, Any]) -> str:
    targets = doc.get("targets", {})
    plabel = targets.get("palais", {}).get("label", "Palais")
    qlabel = targets.get("peer", {}).get("label", "Postfix + Dovecot")
    # Cyrus (IMAP only) gets its own column when it took part.
    cyrus = "cyrus" in targets
    clabel = targets.get("cyrus", {}).get("label", "Cyrus IMAP")
    lines = [
        "# Palais benchmark results",
        "",
        f"Run {doc.get('started', '?')} ({doc.get('mode', '?')} mode, "
        f"{doc.get('duration_s', '?')} s). "
        "Generated by `python -m bench`; the JSON beside it has every figure.",
        "",
    ]
    m = doc.get("machine", {})
    lines.append(
        f"Machine: {m.get('cpus', '?')} CPUs ({m.get('cpu_model', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, "
        f"{m.get('os', '?')}, Linux {m.get('kernel', '?')}."
    )
    v = doc.get("versions", {})
    lines.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".")
    pr = doc.get("parameters", {})
    lines.append(
        f"Parameters: ingest {pr.get('n')} msgs of {pr.get('size_kib')} KiB over "
        f"{pr.get('concurrency')} reused connections; storm {pr.get('storm_n')} msgs, "
        f"{pr.get('storm_concurrency')} at a time, one connection each; IMAP folder of "
        f"{pr.get('imap_messages')} msgs; push {pr.get('push_duration_s')} s at "
        f"{pr.get('push_rate')} msg/s background, {pr.get('push_probe_rate')} probes/s; memory "
        f"{pr.get('memory_sessions')} idle sessions (SELECT INBOX + IDLE); "
        + (
            f"receipts: an ingest of {pr.get('receipts_n') or pr.get('n')} msgs, then "
            f"{pr.get('receipts_reads')} first reads one at a time; "
            if "receipts" in doc
            else ""
        )
        + f"rounds {pr.get('rounds')}."
    )
    lines.append("")
    for name, t in targets.items():
        if t.get("status") != "ok":
            lines.append(f"**{name} skipped:** {t.get('reason', '?')}")
            lines.append("")
    extra_head, extra_rule = (f" {clabel} |", "---:|") if cyrus else ("", "")
    lines += [
        f"| workload | figure | better | {plabel} | {qlabel} |{extra_head} Palais/peer |",
        f"|---|---|---|---:|---:|{extra_rule}---:|",
    ]
    for wl, key, label, better in HEADLINE:
        if wl not in doc:
            continue
        w = doc[wl]
        pa = w.get("palais") or {}
        pe = w.get("peer") or {}
        cy = w.get("cyrus") or {}
        pv = pa.get(key) if "skipped" not in pa else None
        qv = pe.get(key) if "skipped" not in pe else None
        cv = cy.get(key) if "skipped" not in cy else None
        if pv is None and qv is None and cv is None and not _unsupported(key, pa, pe, cy):
            continue
        r = (w.get("ratio") or {}).get(key)
        peer_cell, ratio_cell = (
            ("n/a", "n/a") if wl in PALAIS_ONLY else (_cell(key, qv, pe), _fmt(r))
        )
        cyrus_cell = ""
        if cyrus:
            cyrus_cell = f" {'n/a' if 'skipped' in cy else _cell(key, cv, cy)} |"
        lines.append(
            f"| {wl} | {label} | {better} | {_cell(key, pv, pa)} | {peer_cell} |{cyrus_cell}"
            f" {ratio_cell} |"
        )
    lines.append("")
    notes: list[str] = []
    for wl in ("ingest", "storm", "imap", "push", "memory", "receipts", "nodes"):
        w = doc.get(wl)
        if not w:
            continue
        for side in ("palais",) if wl in PALAIS_ONLY else ("palais", "peer", "cyrus"):
            r = w.get(side) or {}
            for what, why in (r.get("unsupported") or {}).items():
                notes.append(f"- {wl} / {side}: {what} unsupported ({why})")
            if "skipped" in r:
                if side == "cyrus" and wl != "imap":
                    continue  # IMAP only: said once, under the table
                if targets.get(side, {}).get("status") == "ok":
                    notes.append(f"- {wl} / {side}: skipped: {r['skipped']}")
                continue
            if r.get("complete") is False:
                why = "; ".join(r.get("notes", [])) or r.get("error", "") or "see JSON"
                notes.append(f"- {wl} / {side}: incomplete ({why})")
            busy = r.get("cpu_busy_before_pct")
            if isinstance(busy, (int, float)) and busy >= QUIET_PCT:
                notes.append(
                    f"- {wl} / {side}: the machine was still {busy:.0f}% busy when the bench "
                    "stopped waiting for it to be quiet (other processes, or the target still "
                    "busy with earlier work)"
                )
            if r.get("errors"):
                notes.append(
                    f"- {wl} / {side}: {r['errors']} errors, e.g. {r.get('error_sample', [''])[0]}"
                )
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines += [
        "Figures: *filed & readable* is messages per second from the first MAIL FROM until",
        "the last message is counted by IMAP STATUS in the recipient's INBOX; *accepted* stops",
        "at the last 250. Ratios are Palais divided by peer for every figure (above 1 is better",
        "only where higher is better). *receipts* (Palais only; Postfix + Dovecot issues none):",
        "deposit-and-delivery receipts in the evidence log per second of that ingest's filed",
        "duration; a read receipt's latency runs from sending the reader's FETCH BODY[] of an",
        "unread message to the `* N EXISTS` in the sender's IDLE on its Accusés de réception.",
        "*unsupported*: the server does not advertise the extension or answers NO/BAD.",
        "*nodes* (Palais only): ingest and push on three fresh instances, one worker on SQLite,",
        "one on PostgreSQL, two (`palais serve --workers 2`, SO_REUSEPORT) on PostgreSQL;",
        "across nodes, the IDLE session and the probes' SMTP connection are on different",
        "workers (checked in /proc).",
        "Cyrus IMAP runs as shipped: it does not set TCP_NODELAY, so a reply written in several",
        "segments waits for the client's delayed ACK (about 40 ms on loopback); it is an IMAP",
        "server only here (the SMTP workloads run on Postfix + Dovecot).",
        "",
    ]
    return "\n".join(lines)
