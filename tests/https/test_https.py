"""The HTTPS endpoint over real loopback TLS, with curl and with Python clients.

Each test drives its own ``asyncio.run`` loop: the point is that twisted.web
answers while asyncio, not Twisted, runs the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import CannotListenError

from palais.gateway.https import (
    AUTOCONFIG_PATHS,
    HttpsHandle,
    autoconfig_document,
    start_https,
)
from palais.gateway.metrics import GatewayMetrics
from palais.mailbox.errors import NotAllowed, TemporaryFailure
from palais.mailbox.identity import Identity
from palais.pki.tls import client_context
from tests.https.conftest import Client, Pki

T = TypeVar("T")
CURL = "/usr/bin/curl"
LOGGER = "palais.tests.https"
AUTOCONFIG: dict[str, object] = {
    "hostname": "mail.palais.test",
    "imaps_port": 10993,
    "smtps_port": 10465,
    "domain": "palais.test",
    "display_name": "Palais <test> & co",
}


def recorded() -> GatewayMetrics:
    """A registry with a little of everything: a counter, a gauge, a histogram."""
    metrics = GatewayMetrics()
    metrics.connections.labels("smtps").inc(3)
    metrics.open_connections.labels("imaps").set(2)
    metrics.smtp_data_seconds.labels("smtps").observe(0.003)
    metrics.smtp_data_seconds.labels("smtps").observe(0.3)
    return metrics


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def directory(pki: Pki) -> Callable[[bytes], Awaitable[Identity]]:
    """A resolve_identity that knows the admin, the lawyer and the revoked admin."""
    known = {c.identity.fingerprint: c.identity for c in (pki.admin, pki.lawyer, pki.revoked)}

    async def resolve(der: bytes) -> Identity:
        await asyncio.sleep(0)  # a real directory awaits its database
        identity = known.get(hashlib.sha256(der).hexdigest())
        if identity is None:
            raise NotAllowed(reason="no account for this certificate (secret-detail)")
        return identity

    return resolve


@contextlib.asynccontextmanager
async def serving(
    pki: Pki,
    *,
    crl: Path | None = None,
    resolve: Callable[[bytes], Awaitable[Identity]] | None = None,
    metrics: GatewayMetrics | None = None,
) -> AsyncIterator[HttpsHandle]:
    handle = await start_https(
        host="127.0.0.1",
        port=0,
        cert=pki.server_cert,
        key=pki.server_key,
        anchors=[pki.ca],
        crls=[crl or pki.crl_empty],
        resolve_identity=resolve or directory(pki),
        metrics=metrics or recorded(),
        log=logging.getLogger(LOGGER),
        autoconfig=AUTOCONFIG,
    )
    try:
        yield handle
    finally:
        await handle.stop()


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        assert self.content_type.startswith("application/json")
        return json.loads(self.body)


async def curl(
    pki: Pki, port: int, path: str, client: Client | None = None, *extra: str
) -> tuple[int, Reply | None, str]:
    """curl's exit code, the reply if there was one, and its stderr."""
    args = [
        "-sS",
        "--cacert",
        str(pki.ca),
        "--resolve",
        f"localhost:{port}:127.0.0.1",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
        *extra,
    ]
    if client is not None:
        args += ["--cert", str(client.cert), "--key", str(client.key)]
    proc = await asyncio.create_subprocess_exec(
        CURL,
        *args,
        f"https://localhost:{port}{path}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    if proc.returncode != 0:
        return proc.returncode, None, err.decode()
    body, _, trailer = out.rpartition(b"\n")
    code, _, content_type = trailer.decode().partition(" ")
    return 0, Reply(int(code), content_type, body), err.decode()


def python_get(
    pki: Pki, port: int, path: str, client: Client | None = None, method: str = "GET"
) -> Reply:
    """A blocking http.client request, for use through asyncio.to_thread."""
    ctx = client_context(pki.ca, client.cert if client else None, client.key if client else None)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return Reply(response.status, response.getheader("content-type", ""), response.read())
    finally:
        conn.close()


def samples(family: Metric) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A family's samples by (name, sorted labels), without the ``_created`` times."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in family.samples
        if not s.name.endswith("_created")
    }


# --- routes -------------------------------------------------------------------


def test_health_without_certificate(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/health")
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 200
            assert reply.json() == {"status": "ok"}
            by_python = await asyncio.to_thread(python_get, pki, server.port, "/health")
            assert by_python.status == 200
            assert by_python.json() == {"status": "ok"}

    run(go())


def test_health_with_certificate(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/health", pki.lawyer)
            assert rc == 0, err
            assert reply is not None and reply.status == 200

    run(go())


def test_metrics_without_certificate_is_401(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/metrics")
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 401
            assert "error" in reply.json()
            by_python = await asyncio.to_thread(python_get, pki, server.port, "/metrics")
            assert by_python.status == 401

    run(go())


def test_metrics_non_admin_is_403(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/metrics", pki.lawyer)
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 403
            assert reply.json() == {"error": "forbidden"}
            by_python = await asyncio.to_thread(
                python_get, pki, server.port, "/metrics", pki.lawyer
            )
            assert by_python.status == 403

    run(go())


def test_metrics_admin(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/metrics", pki.admin)
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 200
            assert reply.content_type == CONTENT_TYPE_LATEST
            text = reply.body.decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert families["palais_up"].type == "gauge"
            assert samples(families["palais_up"]) == {("palais_up", ()): 1.0}
            assert "# TYPE palais_connections_total counter\n" in text
            assert families["palais_connections"].type == "counter"
            connections = samples(families["palais_connections"])
            assert connections[("palais_connections_total", (("listener", "smtps"),))] == 3.0
            assert samples(families["palais_open_connections"]) == {
                ("palais_open_connections", (("listener", "imaps"),)): 2.0,
                # This listener's own: the scrape itself, counted once accepted.
                ("palais_open_connections", (("listener", "https"),)): 1.0,
            }
            assert connections[("palais_connections_total", (("listener", "https"),))] == 1.0
            data = families["palais_smtp_data_to_reply_seconds"]
            assert data.type == "histogram"
            values = samples(data)
            name, smtps = "palais_smtp_data_to_reply_seconds", ("listener", "smtps")
            assert values[(f"{name}_count", (smtps,))] == 2.0
            assert values[(f"{name}_bucket", (("le", "0.005"), smtps))] == 1.0
            assert values[(f"{name}_bucket", (("le", "0.5"), smtps))] == 2.0
            assert values[(f"{name}_bucket", (("le", "+Inf"), smtps))] == 2.0
            by_python = await asyncio.to_thread(python_get, pki, server.port, "/metrics", pki.admin)
            assert by_python.status == 200
            assert by_python.content_type == CONTENT_TYPE_LATEST
            assert b'palais_connections_total{listener="smtps"} 3.0\n' in by_python.body
            assert b'palais_connections_total{listener="https"} 2.0\n' in by_python.body

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(go())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("HTTPS GET")]
    assert "HTTPS GET /metrics 200 admin@palais.test (admin)" in lines


def test_unknown_certificate_is_403_without_detail(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/metrics", pki.unknown)
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 403
            assert b"secret-detail" not in reply.body

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(go())
    assert "secret-detail" in caplog.text  # the reason goes to the log only


def test_temporary_identity_failure_is_503(pki: Pki) -> None:
    async def unavailable(der: bytes) -> Identity:
        raise TemporaryFailure(reason="database down")

    async def go() -> None:
        async with serving(pki, resolve=unavailable) as server:
            rc, reply, err = await curl(pki, server.port, "/metrics", pki.admin)
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 503
            assert b"database" not in reply.body

    run(go())


def test_failing_metrics_is_500_without_exception_text(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def collect(self) -> list[Metric]:
            raise RuntimeError("secret-internal-state")

        def describe(self) -> list[Metric]:
            return []  # registered without a first collect()

    metrics = recorded()
    metrics.registry.register(Broken())

    async def go() -> None:
        async with serving(pki, metrics=metrics) as server:
            rc, reply, err = await curl(pki, server.port, "/metrics", pki.admin)
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 500
            assert reply.json() == {"error": "internal error"}
            assert b"secret" not in reply.body

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(go())
    assert "secret-internal-state" in caplog.text  # traceback logged


@pytest.mark.parametrize("path", [p.decode() for p in AUTOCONFIG_PATHS])
def test_autoconfig(pki: Pki, path: str) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(
                pki, server.port, path + "?emailaddress=someone%40palais.test"
            )
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 200
            assert reply.content_type.startswith("application/xml")
            root = ET.fromstring(reply.body)
            assert root.tag == "clientConfig"
            provider = root.find("emailProvider")
            assert provider is not None
            assert provider.get("id") == "palais.test"
            assert provider.findtext("displayName") == "Palais <test> & co"
            imap = provider.find("incomingServer[@type='imap']")
            smtp = provider.find("outgoingServer[@type='smtp']")
            assert imap is not None and smtp is not None
            for server_el, port in ((imap, "10993"), (smtp, "10465")):
                assert server_el.findtext("hostname") == "mail.palais.test"
                assert server_el.findtext("port") == port
                assert server_el.findtext("socketType") == "SSL"
            assert imap.findtext("authentication") == "password-cleartext"
            assert smtp.findtext("authentication") == "none"

    run(go())


def test_unknown_path_is_404(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/nope", pki.admin)
            assert rc == 0, err
            assert reply is not None
            assert reply.status == 404
            assert reply.json() == {"error": "not found"}

    run(go())


def test_other_methods_are_405(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            reply = await asyncio.to_thread(python_get, pki, server.port, "/health", None, "DELETE")
            assert reply.status == 405
            head = await asyncio.to_thread(python_get, pki, server.port, "/health", None, "HEAD")
            assert head.status == 200
            assert head.body == b""

    run(go())


def test_one_log_line_per_request(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            await curl(pki, server.port, "/health")
            await curl(pki, server.port, "/metrics", pki.lawyer)
            await curl(pki, server.port, "/missing")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(go())
    records = [r for r in caplog.records if r.getMessage().startswith("HTTPS GET")]
    assert [r.getMessage() for r in records] == [
        "HTTPS GET /health 200",
        "HTTPS GET /metrics 403 lawyer@palais.test (avocat)",
        "HTTPS GET /missing 404",
    ]
    # The same facts as fields, for the JSON-lines log.
    fields = ("listener", "method", "path", "status", "identity", "role")
    assert [tuple(getattr(r, f) for f in fields) for r in records] == [
        ("https", "GET", "/health", 200, None, None),
        ("https", "GET", "/metrics", 403, "lawyer@palais.test", "avocat"),
        ("https", "GET", "/missing", 404, None, None),
    ]


# --- TLS ----------------------------------------------------------------------


def test_revoked_certificate_fails_handshake(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    metrics = GatewayMetrics()
    refused = {"listener": "https", "reason": "certificate"}

    async def go() -> None:
        async with serving(pki, crl=pki.crl_revoking, metrics=metrics) as server:
            rc, reply, err = await curl(pki, server.port, "/health", pki.revoked)
            assert rc != 0
            assert reply is None
            assert metrics.registry.get_sample_value("palais_refusals_total", refused) == 1.0
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.to_thread(python_get, pki, server.port, "/health", pki.revoked)
            # The same CRL does not touch other certificates.
            rc, reply, err = await curl(pki, server.port, "/metrics", pki.admin)
            assert rc == 0, err
            assert reply is not None and reply.status == 200
            assert metrics.registry.get_sample_value("palais_refusals_total", refused) == 2.0
            # The refused handshakes are connections, but no completed handshakes.
            https = {"listener": "https"}
            assert metrics.registry.get_sample_value("palais_connections_total", https) == 3.0
            handshakes = "palais_tls_handshake_seconds_count"
            assert metrics.registry.get_sample_value(handshakes, https) == 1.0

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(go())
    assert "certificate revoked" in caplog.text


def test_revoked_certificate_accepted_under_empty_crl(pki: Pki) -> None:
    """Control for the test above: the failure comes from the CRL, not the certificate."""

    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, err = await curl(pki, server.port, "/metrics", pki.revoked)
            assert rc == 0, err
            assert reply is not None and reply.status == 200

    run(go())


def test_tls_1_1_refused(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            rc, reply, _ = await curl(pki, server.port, "/health", None, "--tls-max", "1.1")
            assert rc != 0
            assert reply is None

    run(go())


def test_session_resumption_keeps_the_identity(pki: Pki) -> None:
    """Resumption with a client certificate needs a session id context on the server."""

    def two_connections(port: int) -> tuple[bool, list[int]]:
        ctx = client_context(pki.ca, pki.admin.cert, pki.admin.key)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # session ids, resumable at once
        session = None
        statuses: list[int] = []
        reused = False
        for _ in range(2):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(
                    b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
                statuses.append(int(data.split(b" ", 2)[1]))
                reused = bool(tls.session_reused)
                session = tls.session
        return reused, statuses

    async def go() -> None:
        async with serving(pki) as server:
            reused, statuses = await asyncio.to_thread(two_connections, server.port)
            assert statuses == [200, 200]
            assert reused

    run(go())


# --- lifecycle ----------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_counted_and_the_open_gauge_returns_to_zero(pki: Pki) -> None:
    metrics = GatewayMetrics()
    https = {"listener": "https"}

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, https)

    async def go() -> None:
        async with serving(pki, metrics=metrics) as server:
            for _ in range(3):
                rc, reply, err = await curl(pki, server.port, "/health")
                assert rc == 0 and reply is not None and reply.status == 200, err
            ctx = client_context(pki.ca)
            conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=10)
            try:
                await asyncio.to_thread(conn.request, "GET", "/health")
                response = await asyncio.to_thread(conn.getresponse)
                response.read()
                assert value("palais_open_connections") == 1.0  # kept alive
            finally:
                conn.close()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while value("palais_open_connections") != 0.0 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert value("palais_open_connections") == 0.0
            assert value("palais_connections_total") == 4.0
            assert value("palais_tls_handshake_seconds_count") == 4.0
            assert 0 < (value("palais_tls_handshake_seconds_sum") or 0) < 4 * 10

    run(go())


def test_two_servers_on_one_loop_and_clean_stop(pki: Pki) -> None:
    async def go() -> None:
        before = _open_fds()
        async with serving(pki) as first, serving(pki) as second:
            assert first.port != second.port
            for server in (first, second):
                rc, reply, err = await curl(pki, server.port, "/health")
                assert rc == 0, err
                assert reply is not None and reply.status == 200
        assert _open_fds() == before  # listening sockets and reactor wakers closed

    run(go())
    run(go())  # a second loop in the same process


def test_stop_closes_idle_keepalive_connections(pki: Pki) -> None:
    async def go() -> None:
        server = await start_https(
            host="127.0.0.1",
            port=0,
            cert=pki.server_cert,
            key=pki.server_key,
            anchors=[pki.ca],
            crls=[pki.crl_empty],
            resolve_identity=directory(pki),
            metrics=GatewayMetrics(),
            log=logging.getLogger(LOGGER),
            autoconfig=AUTOCONFIG,
        )
        ctx = client_context(pki.ca)
        conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=10)
        try:
            await asyncio.to_thread(conn.request, "GET", "/health")
            response = await asyncio.to_thread(conn.getresponse)
            assert response.status == 200
            response.read()
            # The connection is now idle and kept alive by the client.
            await asyncio.wait_for(server.stop(), timeout=5)
            await server.stop()  # idempotent
        finally:
            conn.close()

    run(go())


def test_stop_waits_for_a_response_in_flight(pki: Pki) -> None:
    async def go() -> None:
        entered = asyncio.Event()
        release = asyncio.Event()

        async def slow(der: bytes) -> Identity:
            entered.set()
            await release.wait()
            return pki.admin.identity

        async with serving(pki, resolve=slow) as server:
            fetch = asyncio.create_task(curl(pki, server.port, "/metrics", pki.admin))
            await asyncio.wait_for(entered.wait(), timeout=10)
            stopping = asyncio.create_task(server.stop())
            await asyncio.sleep(0.1)
            assert not stopping.done()
            release.set()
            await asyncio.wait_for(stopping, timeout=5)
            rc, reply, err = await fetch
            assert rc == 0, err
            assert reply is not None and reply.status == 200

    run(go())


def test_bad_files_fail_before_listening(pki: Pki, tmp_path: Path) -> None:
    async def go() -> None:
        before = _open_fds()
        with pytest.raises(ValueError):
            await start_https(
                host="127.0.0.1",
                port=0,
                cert=pki.server_cert,
                key=pki.server_key,
                anchors=[pki.ca],
                crls=[],
                resolve_identity=directory(pki),
                metrics=GatewayMetrics(),
                log=logging.getLogger(LOGGER),
                autoconfig=AUTOCONFIG,
            )
        with pytest.raises(FileNotFoundError):
            await start_https(
                host="127.0.0.1",
                port=0,
                cert=tmp_path / "missing.pem",
                key=pki.server_key,
                anchors=[pki.ca],
                crls=[pki.crl_empty],
                resolve_identity=directory(pki),
                metrics=GatewayMetrics(),
                log=logging.getLogger(LOGGER),
                autoconfig=AUTOCONFIG,
            )
        assert _open_fds() == before

    run(go())


def test_port_in_use_releases_the_reactor(pki: Pki) -> None:
    async def go() -> None:
        async with serving(pki) as server:
            before = _open_fds()
            with pytest.raises(CannotListenError):
                await start_https(
                    host="127.0.0.1",
                    port=server.port,
                    cert=pki.server_cert,
                    key=pki.server_key,
                    anchors=[pki.ca],
                    crls=[pki.crl_empty],
                    resolve_identity=directory(pki),
                    metrics=GatewayMetrics(),
                    log=logging.getLogger(LOGGER),
                    autoconfig=AUTOCONFIG,
                )
            assert _open_fds() == before

    run(go())


def test_global_reactor_never_installed(pki: Pki) -> None:
    """Serving must not import twisted.internet.reactor (it would install a global one)."""
    script = textwrap.dedent(
        f"""
        import asyncio, logging, sys
        from pathlib import Path
        from palais.gateway.https import start_https
        from palais.gateway.metrics import GatewayMetrics
        from palais.pki.tls import client_context
        import http.client

        async def main():
            async def resolve(der):
                raise AssertionError("not called")
            server = await start_https(
                host="127.0.0.1", port=0,
                cert=Path({str(pki.server_cert)!r}), key=Path({str(pki.server_key)!r}),
                anchors=[Path({str(pki.ca)!r})], crls=[Path({str(pki.crl_empty)!r})],
                resolve_identity=resolve, metrics=GatewayMetrics(),
                log=logging.getLogger("x"), autoconfig={AUTOCONFIG!r},
            )
            def get():
                conn = http.client.HTTPSConnection(
                    "localhost", server.port, context=client_context(Path({str(pki.ca)!r})))
                conn.request("GET", "/health")
                status = conn.getresponse().status
                conn.close()
                return status
            assert await asyncio.to_thread(get) == 200
            await server.stop()

        asyncio.run(main())
        assert "twisted.internet.reactor" not in sys.modules, "global reactor imported"
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --- bodies -------------------------------------------------------------------


def test_autoconfig_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown keys \\['extra'\\]"):
        autoconfig_document({**AUTOCONFIG, "extra": 1})
    with pytest.raises(ValueError, match="missing keys \\['domain'\\]"):
        autoconfig_document({k: v for k, v in AUTOCONFIG.items() if k != "domain"})
    with pytest.raises(ValueError, match="imaps_port"):
        autoconfig_document({**AUTOCONFIG, "imaps_port": "993"})
