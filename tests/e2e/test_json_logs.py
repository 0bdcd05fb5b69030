"""`[log] format = "json"`: a real instance whose stderr is JSON lines only."""

from __future__ import annotations

import http.client
import imaplib
import json
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.instance import Instance, create_instance

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def serve(inst: Instance, stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
    """`palais serve`, with stderr (the log) kept apart from stdout."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "palais", "serve", str(inst.root)],
            stdout=out,
            stderr=err,
            cwd=inst.root,
        )
    deadline = time.monotonic() + 30
    while not all(Instance._listening(inst.port(n)) for n in ("smtps", "imaps", "https")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"palais serve did not start: {stderr.read_text()}")
        time.sleep(0.05)
    return proc


def read_as_clerk(inst: Instance) -> None:
    conn = imaplib.IMAP4_SSL(
        "localhost", inst.port("imaps"), ssl_context=inst.client_context("greffier1")
    )
    conn.authenticate("EXTERNAL", lambda _: b"")
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()


def scrape_metrics(inst: Instance) -> None:
    conn = http.client.HTTPSConnection(
        "localhost", inst.port("https"), context=inst.client_context("admin1"), timeout=10
    )
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    finally:
        conn.close()


def refused_stranger(inst: Instance) -> None:
    with pytest.raises((ssl.SSLError, OSError)):
        conn = imaplib.IMAP4_SSL(
            "localhost", inst.port("imaps"), ssl_context=inst.client_context("stranger")
        )
        conn.noop()  # TLS 1.3: the refusal arrives with the first read


def test_every_stderr_line_is_a_json_object(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance", extra_config='[log]\nformat = "json"\n')
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    proc = serve(inst, stdout, stderr)
    try:
        inst.submit("journal")
        read_as_clerk(inst)
        scrape_metrics(inst)
        refused_stranger(inst)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, stderr.read_text()
    assert stdout.read_text() == "palais: ready\n"

    entries: list[dict[str, Any]] = []
    for line in stderr.read_text(encoding="ascii").splitlines():
        entry = json.loads(line)  # every line, or this fails naming it
        assert isinstance(entry, dict), line
        assert ISO_UTC.fullmatch(entry["time"]), line
        assert entry["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        assert isinstance(entry["logger"], str) and isinstance(entry["message"], str), line
        entries.append(entry)

    messages = [(e["logger"], e["message"]) for e in entries]
    assert any(logger == "palais" and m.startswith("listening ") for logger, m in messages)
    assert ("palais", "stopped") in messages
    sessions = [e for e in entries if e["logger"] == "palais.imap" and "outcome" in e]
    clerk = [e for e in sessions if e.get("identity") == inst.address("greffier1")]
    assert len(clerk) == 1, sessions
    (session,) = clerk
    assert re.fullmatch(r"127\.0\.0\.1:\d+", session["peer"])
    assert re.fullmatch(r"[0-9a-f]{64}", session["fingerprint"])
    assert isinstance(session["commands"], int) and session["commands"] >= 3
    assert isinstance(session["duration"], float | int) and session["duration"] >= 0
    (scrape,) = [e for e in entries if e["logger"] == "palais.https" and "status" in e]
    assert scrape["message"].startswith("HTTPS GET /metrics 200 ")
    assert (scrape["method"], scrape["path"], scrape["status"]) == ("GET", "/metrics", 200)
    assert (scrape["identity"], scrape["role"]) == (inst.address("admin1"), "admin")
    # The refused stranger (and the start-up probe) leave a line without identity.
    assert any(e["identity"] is None and e["fingerprint"] is None for e in sessions), sessions
