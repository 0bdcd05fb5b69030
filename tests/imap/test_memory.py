"""1,000 idle authenticated sessions cost less than 50 KiB each, TLS included.

The server runs in its own process so that its resident memory can be read
from /proc without counting the clients.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.imap.conftest import Pki

SESSIONS = 1000
BUDGET = 50 * 1024

_SERVER = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from pathlib import Path
    from palais.gateway.admission import Admission
    from palais.gateway.imap import start_imap_server
    from tests.imap.conftest import Pki, resolve_identity
    from tests.imap.fake_store import FakeStore

    async def main() -> None:
        pki = Pki(**{k: Path(v) for k, v in json.loads(sys.argv[1]).items()})
        store = FakeStore()
        for i in range(20):
            store.deliver("INBOX", b"Subject: %d\\r\\n\\r\\nbody\\r\\n" % i)
        log = logging.getLogger("memory")
        log.addHandler(logging.NullHandler())
        log.propagate = False
        server = await start_imap_server(
            host="127.0.0.1", port=0, ssl_context=pki.server_context(), access=store,
            resolve_identity=resolve_identity, log=log,
            # Every session comes from 127.0.0.1: above the default cap of 64.
            admission=Admission(max_connections=int(sys.argv[2]), max_per_address=int(sys.argv[2])),
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())
    """
)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _open(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost"
    )
    buf = b""
    for command in (None, b"a AUTHENTICATE EXTERNAL =\r\n", b"b SELECT INBOX\r\n"):
        if command:
            sock.sendall(command)
        tag = command[:1] if command else b"*"
        while not any(line.startswith(tag + b" ") for line in buf.split(b"\r\n")):
            chunk = sock.recv(65536)
            assert chunk, "server closed the connection"
            buf += chunk
        buf = b""
    return sock


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_idle_sessions_fit_the_memory_budget(pki: Pki) -> None:
    paths = json.dumps({k: str(v) for k, v in pki.__dict__.items()})
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, paths, str(SESSIONS + 100)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    sockets: list[ssl.SSLSocket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        ctx = pki.client_context()
        # Warm-up: first-use allocations (code objects, OpenSSL tables) are not per session.
        sockets += [_open(port, ctx) for _ in range(50)]
        before = _rss(proc.pid)
        sockets += [_open(port, ctx) for _ in range(SESSIONS)]
        after = _rss(proc.pid)
        per_session = (after - before) / SESSIONS
        print(f"{per_session / 1024:.1f} KiB per idle session")
        assert per_session < BUDGET
    finally:
        for sock in sockets:
            sock.close()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
