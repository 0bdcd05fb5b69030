"""Composition root: settings, storage, PKI and front-ends wired together."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from palais.config import Settings
from palais.gateway.https import HttpsHandle, start_https
from palais.gateway.imap.server import start_imap_server
from palais.gateway.metrics import GatewayMetrics
from palais.gateway.smtp import PalaisSMTP, SubmissionHandler, make_smtp_factory
from palais.mailbox.errors import NotAllowed
from palais.mailbox.identity import AnchorGroup, Identity, Role
from palais.mailbox.routing import SUBMITTING_ROLES
from palais.mailbox.submission import SubmissionDesk
from palais.pki.identify import CertificateRefused, TrustAnchors
from palais.pki.tls import server_context
from palais.storage import Storage, open_storage

log = logging.getLogger("palais")


def trust_anchors(settings: Settings) -> TrustAnchors:
    t = settings.trust
    return TrustAnchors(
        {
            AnchorGroup.AVOCATS: t.avocats,
            AnchorGroup.JUSTICE: t.justice,
            AnchorGroup.JURIDICTIONS: t.juridictions,
            AnchorGroup.ADMIN: t.admin,
        },
        t.crls,
    )


def open_instance_storage(settings: Settings) -> Storage:
    # No silent migration at start: `palais migrate` upgrades the schema once
    # (for every node); a database at another revision stops the start here.
    return open_storage(
        settings.database_url(),
        settings.storage.blobs,
        max_batch=settings.storage.max_batch,
        migrate=False,
    )


@dataclass
class Gateway:
    settings: Settings
    storage: Storage | None = None
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    handlers: dict[str, SubmissionHandler] = field(default_factory=dict)
    https: HttpsHandle | None = None
    recorded: GatewayMetrics = field(default_factory=GatewayMetrics)

    async def start(self) -> None:
        s = self.settings
        self.storage = storage = open_instance_storage(s)
        storage.start()
        self.recorded.watch_writer(storage.commits)
        anchors = trust_anchors(s)
        tls = server_context(s.tls.certificate, s.tls.key, anchors.anchor_paths, anchors.crl_paths)

        async def resolve_identity(der: bytes) -> Identity:
            try:
                cert = anchors.identify(der)
            except CertificateRefused as refused:
                raise NotAllowed(reason=str(refused)) from None
            return await storage.directory.identity_for(cert)

        desk = SubmissionDesk(storage.directory, storage.mail, max_size=s.smtp.max_message_size)
        loop = asyncio.get_running_loop()
        host = s.listen.host

        def smtp(listener: str, roles: frozenset[Role], implicit: bool) -> Callable[[], PalaisSMTP]:
            factory, handler = make_smtp_factory(
                desk=desk,
                listener=listener,
                resolve_identity=resolve_identity,
                allowed_roles=roles,
                hostname=s.instance.hostname,
                max_size=s.smtp.max_message_size,
                max_recipients=s.smtp.max_recipients,
                timeout=s.smtp.timeout,
                starttls_context=None if implicit else tls,
                metrics=self.recorded,
            )
            self.handlers[listener] = handler
            return factory

        people = SUBMITTING_ROLES
        courts = frozenset({Role.JURIDICTION})
        self.servers.append(
            await loop.create_server(smtp("smtps", people, True), host, s.listen.smtps, ssl=tls)
        )
        self.servers.append(
            await loop.create_server(smtp("submission", people, False), host, s.listen.submission)
        )
        self.servers.append(
            await loop.create_server(smtp("court", courts, False), host, s.listen.court)
        )

        self.servers.append(
            await start_imap_server(
                host=host,
                port=s.listen.imaps,
                ssl_context=tls,
                access=storage.mail,
                resolve_identity=resolve_identity,
                log=logging.getLogger("palais.imap"),
                max_append_size=s.imap.max_append_size,
                idle_timeout=s.imap.idle_timeout,
                metrics=self.recorded,
            )
        )
        self.https = await start_https(
            host=host,
            port=s.listen.https,
            cert=s.tls.certificate,
            key=s.tls.key,
            anchors=anchors.anchor_paths,
            crls=anchors.crl_paths,
            resolve_identity=resolve_identity,
            metrics=self.recorded,
            log=logging.getLogger("palais.https"),
            autoconfig={
                "hostname": s.instance.hostname,
                "imaps_port": s.listen.imaps,
                "smtps_port": s.listen.smtps,
                "domain": s.instance.mail_domain,
                "display_name": s.instance.name,
            },
        )
        log.info(
            "listening host=%s https=%d smtps=%d submission=%d court=%d imaps=%d loop=%s",
            host,
            s.listen.https,
            s.listen.smtps,
            s.listen.submission,
            s.listen.court,
            s.listen.imaps,
            type(loop).__module__.split(".")[0],
        )

    async def stop(self) -> None:
        if self.https is not None:
            await self.https.stop()
            self.https = None
        for server in self.servers:
            server.close()
        for server in self.servers:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=5)
            except TimeoutError:
                log.warning("some connections did not close in time")
        self.servers.clear()
        if self.storage is not None:
            # Commits everything already queued: a message whose 250 was sent
            # is on disk already; one in flight is stored even if its client left.
            await asyncio.to_thread(self.storage.close)
            self.storage = None


async def serve(settings: Settings) -> None:
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    print("palais: ready", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await gateway.stop()
        log.info("stopped")
