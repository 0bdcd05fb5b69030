"""The gateway's indexing process: new mail is found at once (read as
not indexed yet), then indexed off the filing path within moments."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.e2e.instance import Instance, create_instance


def _pending(instance: Instance) -> int:
    with sqlite3.connect(instance.root / "palais.db") as db:
        return int(db.execute("SELECT count(*) FROM text_pending").fetchone()[0])


def _indexed(instance: Instance, word: str) -> bool:
    with sqlite3.connect(instance.root / "palais.db") as db:
        found = db.execute(
            "SELECT count(*) FROM message_body_text WHERE message_body_text MATCH ?",
            # detail=none keeps no positions: every trigram of the word, anywhere.
            (" AND ".join(f'"{word[i : i + 3]}"' for i in range(len(word) - 2)),),
        ).fetchone()
    return int(found[0]) > 0


def test_new_mail_is_searchable_then_indexed(instance: Instance) -> None:
    word = "mot" + uuid.uuid4().hex[:10]
    instance.submit(f"recherche {word}", body=f"Bonjour, le {word} est dans le corps.")
    clerk = instance.imap("greffier1")
    try:
        assert clerk.select("INBOX", readonly=True)[0] == "OK"
        typ, data = clerk.uid("SEARCH", "BODY", word)
        assert typ == "OK" and data[0], data  # found whether indexed yet or not
        deadline = time.monotonic() + 30
        while _pending(instance) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _pending(instance) == 0
        assert _indexed(instance, word)
        typ, again = clerk.uid("SEARCH", "BODY", word)
        assert typ == "OK" and again == data
    finally:
        clerk.logout()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_helper_processes_end_with_a_killed_gateway(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance")
    inst.start()
    assert inst.proc is not None
    helpers = _children(inst.proc.pid)
    assert len(helpers) >= 2  # receipt writing and indexing (and the resource tracker)
    inst.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in helpers if _alive(p)]


def test_a_stop_signal_to_every_process_of_the_gateway_stops_it(tmp_path: Path) -> None:
    """systemd (KillMode=control-group) and Ctrl-C signal the gateway and its
    helper processes at once: the gateway still stops, promptly. It once
    hung for good, waiting for the killed indexer to acknowledge its stop."""
    inst = create_instance(tmp_path / "instance")
    with (tmp_path / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "palais", "serve", str(inst.root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=inst.root,
            start_new_session=True,  # a process group of its own, as under systemd
        )
    try:
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        helpers = _children(proc.pid)
        assert len(helpers) >= 2
        time.sleep(2)  # the indexer done with the demo's mail, waiting for more
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "palais stopped" in (tmp_path / "serve.log").read_text()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in helpers if _alive(p)]
