"""python -m bench: run the workloads against Palais, Postfix + Dovecot and Cyrus, alternating.

Examples::

    python -m bench                      # full run, both targets: bench/results/latest.json
                                         # and bench/RESULTS.md
    python -m bench --quick              # < 1 minute, writes bench/results/quick.json only
    python -m bench --targets peer --only ingest,storm -n 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvloop

from . import nodes, procs, report
from .targets.base import Target, TargetUnavailable
from .workloads import WORKLOADS as BASE_WORKLOADS
from .workloads import Params, Run, receipts_read_limit

WORKLOADS = {**BASE_WORKLOADS, "nodes": nodes.nodes_workload}
# Left out of quick mode (CI) unless named in --only: it makes and starts three
# instances and a PostgreSQL server, which would double the quick run.
FULL_ONLY = {"nodes"}

BENCH_DIR = Path(__file__).resolve().parent
ALL_TARGETS = ("palais", "peer", "cyrus")
# Cyrus (a second IMAP peer) runs in full mode only: quick mode (CI) stays short.
QUICK_SKIPS = {"cyrus": "quick mode: Cyrus IMAP runs in full mode only (it is fetched and filled)"}

QUICK: dict[str, Any] = dict(
    n=400,
    storm_n=150,
    imap_messages=3_000,
    imap_repeats=2,
    push_duration_s=3.0,
    push_probe_rate=10.0,
    memory_sessions=100,
    receipts_n=200,
    receipts_reads=20,
    send_timeout_s=20.0,
    filing_timeout_s=15.0,
    io_timeout_s=15.0,
    rounds=1,
)
FULL: dict[str, Any] = dict(
    n=10_000,
    storm_n=2_000,
    imap_messages=100_000,
    imap_repeats=15,
    push_duration_s=30.0,
    push_probe_rate=10.0,
    memory_sessions=1_000,
    receipts_n=None,
    receipts_reads=200,
    send_timeout_s=300.0,
    filing_timeout_s=180.0,
    io_timeout_s=30.0,
    rounds=1,
)
# Workloads repeated `rounds` times (alternating target order); the others run once per target.
REPEATED = {"ingest", "storm", "push"}
# Workloads of features the peer does not have: it is not run and shows n/a.
PALAIS_ONLY = {
    "receipts": "n/a: Postfix + Dovecot issues no receipts",
    "nodes": "n/a: Palais's own deployments (SQLite, PostgreSQL, 2 workers)",
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--quick", action="store_true", help="small counts, under a minute (development)"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="exit 1 unless Palais ran every selected workload to completion (CI); "
        "no figure is judged and a peer that cannot run does not fail it",
    )
    ap.add_argument(
        "--only",
        help="comma list of workloads: "
        + ",".join(WORKLOADS)
        + " (default: all; quick mode: all but "
        + ",".join(sorted(FULL_ONLY))
        + ")",
    )
    ap.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="comma list among: " + ",".join(ALL_TARGETS),
    )
    ap.add_argument("-n", type=int, help="ingest: number of messages")
    ap.add_argument(
        "--size-kib", type=float, help="message size for ingest/storm/push (KiB, default 4)"
    )
    ap.add_argument(
        "--concurrency", type=int, help="ingest and storm: concurrent connections (default 20)"
    )
    ap.add_argument("--storm-n", type=int, help="storm: number of messages (one connection each)")
    ap.add_argument(
        "--nodes-configs",
        help="nodes: comma list of the configurations to run among sqlite_1w,pg_1w,pg_2w"
        " (default all; for comparing two trees on one of them)",
    )
    ap.add_argument("--imap-messages", type=int, help="imap: folder size (default 100000)")
    ap.add_argument("--push-rate", type=float, help="push: background msg/s (default 200)")
    ap.add_argument("--push-duration", type=float, help="push: seconds of load")
    ap.add_argument("--memory-sessions", type=int, help="memory: idle IMAP sessions (default 1000)")
    ap.add_argument(
        "--receipts-n", type=int, help="receipts: messages of its ingest (default: as -n)"
    )
    ap.add_argument("--receipts-reads", type=int, help="receipts: first reads timed (default 200)")
    ap.add_argument(
        "--rounds", type=int, help="repetitions of ingest/storm/push, alternating target order"
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="JSON output (default bench/results/latest.json, quick: quick.json)",
    )
    ap.add_argument(
        "--markdown",
        type=Path,
        help="Markdown table output (default bench/RESULTS.md; quick mode: none unless given)",
    )
    ap.add_argument(
        "--palais-dir",
        type=Path,
        help="existing instance made by `palais init DIR --ports BASE` "
        "(default: made in the work dir)",
    )
    ap.add_argument(
        "--workdir", type=Path, help="parent for the temporary directory (default /tmp)"
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (configs, logs, maildirs)"
    )
    ap.add_argument(
        "--no-install", action="store_true", help="never apt-get install the peer's packages"
    )
    ap.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rewrite the Markdown table (--markdown, default bench/RESULTS.md) from a JSON",
    )
    args = ap.parse_args(argv)
    if args.only is None:
        args.only = ",".join(w for w in WORKLOADS if not (args.quick and w in FULL_ONLY))
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    bad = [w for w in args.only if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s): {', '.join(bad)}")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if any(t not in ALL_TARGETS for t in args.targets) or not args.targets:
        ap.error("--targets takes some of " + ", ".join(ALL_TARGETS))
    args.nodes_configs = tuple(
        k.strip() for k in (args.nodes_configs or "").split(",") if k.strip()
    )
    known = [c.key for c in nodes.CONFIGS]
    if any(k not in known for k in args.nodes_configs):
        ap.error("--nodes-configs takes some of " + ", ".join(known))
    return args


def build_params(args: argparse.Namespace) -> Params:
    p = Params(**(QUICK if args.quick else FULL))
    overrides = {
        "n": args.n,
        "size_kib": args.size_kib,
        "concurrency": args.concurrency,
        "storm_n": args.storm_n,
        "imap_messages": args.imap_messages,
        "push_rate": args.push_rate,
        "push_duration_s": args.push_duration,
        "memory_sessions": args.memory_sessions,
        "receipts_n": args.receipts_n,
        "receipts_reads": args.receipts_reads,
        "rounds": args.rounds,
    }
    for k, v in overrides.items():
        if v is not None:
            setattr(p, k, v)
    if args.concurrency is not None:
        p.storm_concurrency = args.concurrency
    p.nodes_configs = args.nodes_configs
    return p


def workload_time_limit(name: str, p: Params) -> float:
    """Outer wall-clock bound per workload run (inner loops have their own, smaller ones)."""
    if name in ("ingest", "storm"):
        return p.send_timeout_s + p.filing_timeout_s + 60
    if name == "imap":
        # Filling the folder is part of the run: Cyrus takes MULTIAPPENDs at a
        # few hundred messages a second.
        return 3600 if p.imap_messages > 20_000 else 600
    if name == "push":
        return p.push_duration_s * 2 + 90
    if name == "receipts":
        return p.send_timeout_s + p.filing_timeout_s + receipts_read_limit(p) + 90
    if name == "nodes":
        return nodes.time_limit(p)
    return max(120.0, p.memory_sessions * 0.2 + 90)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def make_targets(args: argparse.Namespace, p: Params, work: Path) -> list[Target | tuple[str, str]]:
    """Targets in the order of --targets; a (name, reason) pair for one that cannot be built."""
    out: list[Target | tuple[str, str]] = []
    for name in args.targets:
        try:
            if args.quick and name in QUICK_SKIPS:
                out.append((name, QUICK_SKIPS[name]))
            elif name == "cyrus":
                from .targets.cyrus import CyrusTarget

                out.append(CyrusTarget(work / "cyrus", log=_log))
            elif name == "peer":
                from .targets.peer import PeerTarget

                out.append(
                    PeerTarget(
                        work / "peer",
                        max_sessions=p.memory_sessions + 50,
                        allow_install=not args.no_install,
                        log=_log,
                    )
                )
            else:
                from .targets.palais import PalaisTarget, create_instance

                inst = args.palais_dir or create_instance(work, log=_log)
                out.append(PalaisTarget(inst, log=_log))
        except TargetUnavailable as exc:
            out.append((name, str(exc)))
        except Exception as exc:
            out.append((name, f"{type(exc).__name__}: {exc}"))
    return out


async def run_all(args: argparse.Namespace, p: Params, work: Path) -> dict[str, Any]:
    started = _dt.datetime.now(_dt.UTC)
    t_start = time.monotonic()
    doc: dict[str, Any] = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "machine": report.machine_info(),
        "versions": report.base_versions(),
        "parameters": asdict(p),
        "workloads": args.only,
        "targets": {},
    }
    run = Run(run_id=started.strftime("%Y%m%d%H%M%S"), log=_log, workdir=work)
    active: list[Target] = []
    built = make_targets(args, p, work)
    try:
        for t in built:
            if isinstance(t, tuple):
                name, reason = t
                _log(f"{name}: skipped: {reason}")
                doc["targets"][name] = {"status": "skipped", "reason": reason}
                continue
            _log(f"{t.name}: starting")
            try:
                t.start()
            except Exception as exc:
                reason = (
                    str(exc)
                    if isinstance(exc, TargetUnavailable)
                    else f"{type(exc).__name__}: {exc}"
                )
                _log(f"{t.name}: skipped: {reason}")
                doc["targets"][t.name] = {"status": "skipped", "reason": reason, "label": t.label}
                with contextlib.suppress(Exception):
                    t.stop()
                continue
            _log(f"{t.name}: up ({t.label})")
            doc["targets"][t.name] = {"status": "ok", "label": t.label, "settings": t.settings()}
            doc["versions"].update(t.versions())
            active.append(t)

        for wl in args.only:
            fn = WORKLOADS[wl]
            rounds = max(1, p.rounds) if wl in REPEATED else 1
            runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in active}
            skipped: dict[str, str] = {}
            for r in range(rounds):
                order = active if r % 2 == 0 else list(reversed(active))
                for t in order:
                    if t.name != "palais" and wl in PALAIS_ONLY:
                        skipped[t.name] = PALAIS_ONLY[wl]
                    if t.workloads is not None and wl not in t.workloads:
                        skipped[t.name] = t.not_run
                    if t.name in skipped:
                        continue
                    _log(f"{wl} [{r + 1}/{rounds}] on {t.name} ...")
                    quiet = await asyncio.to_thread(t.quiesce, 30.0 if args.quick else 180.0)
                    if not quiet:
                        _log(f"{t.name}: still busy with earlier work after the quiesce timeout")
                    # Quiet first: what a target does once its ports answer
                    # (or still does after the last workload) is not this one's.
                    noise = await asyncio.to_thread(procs.settle, 3.0 if args.quick else 60.0)
                    try:
                        res = await asyncio.wait_for(fn(t, p, run), workload_time_limit(wl, p))
                    except NotImplementedError as exc:
                        skipped[t.name] = f"not implemented: {exc}"
                        _log(f"{wl} on {t.name}: skipped: {exc}")
                        continue
                    except TimeoutError:
                        res = {
                            "complete": False,
                            "error": f"workload exceeded {workload_time_limit(wl, p):.0f} s",
                        }
                    except Exception as exc:
                        traceback.print_exc()
                        res = {"complete": False, "error": f"{type(exc).__name__}: {exc}"}
                    res["cpu_busy_before_pct"] = noise  # other load on the machine just before
                    res["quiet_before"] = quiet  # False: the target still had work queued
                    runs[t.name].append(res)
                    _log(f"{wl} on {t.name}: " + _brief(wl, res))
            entry: dict[str, Any] = {}
            for name in ALL_TARGETS:
                if name in skipped:
                    entry[name] = {"skipped": skipped[name]}
                elif runs.get(name):
                    entry[name] = report.aggregate(runs[name])
                elif name in doc["targets"]:
                    entry[name] = {"skipped": doc["targets"][name].get("reason", "not run")}
                else:
                    entry[name] = {"skipped": "not selected (--targets)"}
            entry["ratio"] = report.ratios(entry.get("palais"), entry.get("peer"))
            doc[wl] = entry
    finally:
        for t in active:
            _log(f"{t.name}: stopping")
            try:
                await asyncio.to_thread(t.stop)
            except Exception as exc:
                _log(f"{t.name}: stop failed: {exc}")
    doc["duration_s"] = round(time.monotonic() - t_start, 1)
    return doc


def _brief(wl: str, res: dict[str, Any]) -> str:
    if "error" in res:
        return f"ERROR {res['error']}"
    keys = {
        "ingest": (
            "msgs_per_s",
            "accepted_msgs_per_s",
            "data_to_250_p50_ms",
            "data_to_250_p99_ms",
            "errors",
        ),
        "storm": (
            "msgs_per_s",
            "accepted_msgs_per_s",
            "handshake_p50_ms",
            "data_to_250_p99_ms",
            "errors",
        ),
        "imap": (
            "select_first_ms",
            "select_ms",
            "fetch_envelopes_ms",
            "search_subject_ms",
            "resync_condstore_ms",
            "sort_date_ms",
            "sort_subject_ms",
            "thread_references_ms",
            "search_body_ms",
            "search_text_ms",
            "qresync_reconnect_ms",
            "unsupported",
        ),
        "push": (
            "notify_p50_ms",
            "notify_p99_ms",
            "background_rate_achieved",
            "probes_notified",
            "errors",
        ),
        "memory": ("sessions", "rss_delta_mib", "per_session_rss_kib", "per_session_pss_kib"),
        "receipts": (
            "receipts_per_s",
            "read_receipt_p50_ms",
            "read_receipt_p99_ms",
            "receipt_bytes_per_msg",
            "errors",
        ),
        "nodes": (
            "sqlite_1w_msgs_per_s",
            "pg_1w_msgs_per_s",
            "pg_2w_msgs_per_s",
            "pg_2w_over_1w",
            "pg_2w_push_p99_ms",
            "pg_2w_push_cross_node",
            "errors",
        ),
    }[wl]
    return ", ".join(f"{k}={res.get(k)}" for k in keys)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        md_path = args.markdown or BENCH_DIR / "RESULTS.md"
        md_path.write_text(report.markdown(json.loads(args.render.read_text())))
        print(f"wrote {md_path}")
        return 0
    p = build_params(args)
    raise_fd_limit()
    out = args.out or BENCH_DIR / "results" / ("quick.json" if args.quick else "latest.json")
    md = args.markdown or (None if args.quick else BENCH_DIR / "RESULTS.md")
    parent = args.workdir or Path("/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="palais-bench-", dir=parent))
    work.chmod(0o755)  # the peer's unprivileged processes traverse it
    _log(f"work directory {work}")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        # The load generator shares the machine's two cores with the target:
        # on uvloop (its TLS in C) it takes about a quarter less CPU away from
        # whichever target it drives (client_cpu_pct 23 -> 17 on Palais's ingest).
        doc = uvloop.run(run_all(args, p, work))
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    finally:
        if args.keep:
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.write_json(doc, out)
    text = report.markdown(doc)
    if md is not None:
        md.write_text(text)
    print()
    print(text)
    _log(f"wrote {out}" + (f" and {md}" if md else ""))
    if args.smoke:
        problems = smoke_problems(doc, list(args.only))
        for problem in problems:
            _log(f"smoke: {problem}")
        return 1 if problems else 0
    ok = [n for n, t in doc["targets"].items() if t.get("status") == "ok"]
    return 0 if ok else 1


def smoke_problems(doc: dict[str, Any], workloads: list[str]) -> list[str]:
    """What keeps a run from being a passing smoke test: Palais's side only."""
    target = doc["targets"].get("palais", {})
    if target.get("status") != "ok":
        return [f"palais did not run: {target.get('reason', 'not selected')}"]
    problems = []
    for name in workloads:
        entry = doc.get(name, {}).get("palais")
        if not isinstance(entry, dict) or "skipped" in entry:
            problems.append(f"{name}: skipped ({(entry or {}).get('skipped', 'no result')})")
        elif not entry.get("complete", False):
            problems.append(f"{name}: incomplete ({entry.get('notes') or 'see the log'})")
    return problems


if __name__ == "__main__":
    sys.exit(main())
