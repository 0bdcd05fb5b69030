"""Fixtures for the IMAP server tests: a fresh PKI per run, a server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import socket
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509

from palais.gateway.imap import start_imap_server
from palais.mailbox.errors import NotAllowed
from palais.mailbox.identity import Identity, Role
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Validity
from tests.imap.fake_store import FakeStore

T = TypeVar("T")
ADDRESS = "me@avocats.test"
STRANGER = "stranger@avocats.test"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path

    def client_context(self, *, stranger: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if stranger:
            ctx.load_cert_chain(str(self.stranger_cert), str(self.stranger_key))
        else:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        ctx.load_verify_locations(cafile=str(self.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("imap-pki")
    validity = Validity.lasting(dt.timedelta(days=1))
    ca = CertificateAuthority.create(certbuilder.name("Test CA"), validity=validity)
    certbuilder.write_certificate(root / "ca.crt", ca.cert)
    ca.issue(
        certbuilder.name("localhost"),
        profile=certbuilder.SERVER,
        dns_names=["localhost"],
        ips=["127.0.0.1"],
        validity=validity,
    ).write(root / "server.crt", root / "server.key")
    for stem, common_name, address in (
        ("client", "Maître Test", ADDRESS),
        ("stranger", "Stranger", STRANGER),
    ):
        ca.issue(
            certbuilder.name(common_name),
            profile=certbuilder.CLIENT,
            emails=[address],
            validity=validity,
        ).write(root / f"{stem}.crt", root / f"{stem}.key")
    return Pki(
        ca=root / "ca.crt",
        server_cert=root / "server.crt",
        server_key=root / "server.key",
        client_cert=root / "client.crt",
        client_key=root / "client.key",
        stranger_cert=root / "stranger.crt",
        stranger_key=root / "stranger.key",
    )


async def resolve_identity(der: bytes) -> Identity:
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = san.get_values_for_type(x509.RFC822Name)
    if addresses != [ADDRESS]:
        raise NotAllowed("This certificate is not registered here")
    return Identity(
        account_id=1,
        address=ADDRESS,
        role=Role.AVOCAT,
        display_name="Maître Test",
        fingerprint=certbuilder.fingerprint(cert),
        mailbox_owner=ADDRESS,
    )


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ServerThread:
    """The real server on its own event loop, so blocking clients can drive it."""

    def __init__(self, store: FakeStore, pki: Pki, **options: Any) -> None:
        self.store = store
        self.pki = pki
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.log = logging.getLogger(f"tests.imap.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self.handler = ListHandler()
        self.log.addHandler(self.handler)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            start_imap_server(
                host="127.0.0.1",
                port=0,
                ssl_context=self.pki.server_context(),
                access=self.store,
                resolve_identity=resolve_identity,
                log=self.log,
                **self.options,
            )
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def run(self, fn: Any, *args: Any) -> Any:
        async def wrapper() -> Any:
            return fn(*args)

        return self.call(wrapper())

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self.server is not None
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            for _ in range(50):
                pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not pending:
                    break
                await asyncio.sleep(0.02)
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
        self.log.removeHandler(self.handler)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def server(store: FakeStore, pki: Pki) -> Iterator[ServerThread]:
    thread = ServerThread(store, pki, idle_timeout=30, max_append_size=1024 * 1024).start()
    try:
        yield thread
    finally:
        thread.stop()


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class RawClient:
    """A line-level IMAP client for checking exact bytes on the wire."""

    def __init__(self, port: int, ctx: ssl.SSLContext, timeout: float = 5) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.greeting = self.read_response()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self) -> bytes:
        """One response line, with any literals it announces."""
        line = self.file.readline()
        if not line:
            raise EOFError("server closed the connection")
        out = line
        while (m := _LITERAL.search(line)) is not None:
            out += self.file.read(int(m.group(1)))
            line = self.file.readline()
            out += line
        return out

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.read_response()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def cmd(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def login(self) -> None:
        assert self.cmd(b"L1", b"AUTHENTICATE EXTERNAL =")[-1].startswith(b"L1 OK")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def raw(server: ServerThread, pki: Pki) -> Iterator[RawClient]:
    with RawClient(server.port, pki.client_context()) as client:
        yield client
