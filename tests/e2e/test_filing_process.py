"""The gateway files SMTP ingest in a process of its own; killed, it costs no message.

Real `palais serve`, smtplib clients, IMAP and curl on /metrics.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.instance import Instance, create_instance
from tests.e2e.test_court_relay import _metric

_STARTED = re.compile(r"filing process started \(pid (\d+)\)")


def _pids(inst: Instance) -> list[int]:
    return [int(p) for p in _STARTED.findall(inst.read_log())]


def _wait_for(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone as far as work goes.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] != "Z"


def _scrape(inst: Instance) -> str:
    return inst.curl_https("/metrics", "admin1").stdout


def _subjects(inst: Instance) -> list[str]:
    imap = inst.imap("greffier1")
    try:
        assert imap.select("INBOX", readonly=True)[0] == "OK"
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
    finally:
        imap.logout()
    return sorted(
        item[1].decode().split("] ", 1)[1].strip() for item in data if isinstance(item, tuple)
    )


def test_ingest_is_filed_by_its_process_and_survives_its_death(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance")
    inst.start()
    try:
        (first,) = _pids(inst)  # started with the gateway
        assert _alive(first)
        assert _metric(_scrape(inst), "palais_filing_process_running") == 1
        inst.submit("premier")
        inst.submit("avant")
        assert _metric(_scrape(inst), "palais_filing_process_jobs_total") == 2

        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: "the filing process ended" in inst.read_log())
        # Accepted whatever the moment: by the gateway's writer while the
        # process is away, or by the process started again.
        inst.submit("pendant")
        _wait_for(lambda: len(_pids(inst)) == 2)
        second = _pids(inst)[1]
        assert second != first and _alive(second)
        inst.submit("apres")

        scraped = _scrape(inst)
        assert _metric(scraped, "palais_filing_process_restarts_total") == 1
        assert _metric(scraped, "palais_filing_process_running") == 1
        assert _metric(scraped, "palais_filing_process_jobs_total") >= 3
        assert _subjects(inst) == ["apres", "avant", "pendant", "premier"]
        # Each has its deposit-and-delivery receipt, whoever filed it.
        lawyer = inst.imap("avocat1")
        try:
            typ, data = lawyer.select('"Accus&AOk-s de r&AOk-ception"', readonly=True)
            assert typ == "OK" and int(data[0] or 0) == 4
        finally:
            lawyer.logout()
    finally:
        inst.stop()
    # It ends with the gateway, after what it was sent.
    _wait_for(lambda: not _alive(second), 10)
    assert "Traceback" not in inst.read_log()
