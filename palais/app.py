"""Composition root: settings, storage, PKI and front-ends wired together."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from palais.alerts_service import Alerts
from palais.config import Settings
from palais.court_systems import arrival_check, relay_worker, relayed_court_systems
from palais.evidence_setup import evidence_key, filing_evidence, instance_evidence
from palais.gateway.admission import SMTP_GOODBYE, Admission, Gate
from palais.gateway.delegation_api import PREFIX as DELEGATIONS_PREFIX
from palais.gateway.delegation_api import delegations_route
from palais.gateway.dossier_search_api import PATH as DOSSIERS_PATH
from palais.gateway.dossier_search_api import dossier_search_route
from palais.gateway.https import HttpsHandle, start_https
from palais.gateway.imap.server import start_imap_server
from palais.gateway.juridictions_page import PATH as JURIDICTIONS_PATH
from palais.gateway.juridictions_page import juridictions_route
from palais.gateway.metrics import AllWriters, GatewayMetrics
from palais.gateway.receipts_page import PREFIX as PRINTABLE_PREFIX
from palais.gateway.receipts_page import receipts_route
from palais.gateway.relay import RelayWorker
from palais.gateway.sessions import CertificateCheck, SessionWatcher
from palais.gateway.smtp import PalaisSMTP, make_smtp_factory
from palais.gateway.tls import TlsServerProtocol, refusal_logger
from palais.gateway.verifier_page import PREFIX as VERIFIER_PREFIX
from palais.gateway.verifier_page import verifier_route
from palais.instance import OWNER_ONLY_UMASK, secure_instance
from palais.juridictions_file import directory_file, load_directory
from palais.mailbox.alerts import DossierEventAlert
from palais.mailbox.delegated_access import DelegatedAccess
from palais.mailbox.delegation import ActedFor
from palais.mailbox.documents import may_carry_documents, refuse_invalid
from palais.mailbox.enrolment import EnrolmentPolicy
from palais.mailbox.errors import NotAllowed
from palais.mailbox.hearing_slots import booked_juridictions
from palais.mailbox.identity import CertificateIdentity, Identity
from palais.mailbox.message_decisions import MessageDecided, MessageDecisions
from palais.mailbox.new_dossier import dossier_address
from palais.mailbox.routing import LISTENER_COMMUNITIES, Listener, listener_roles
from palais.mailbox.saisine_flow import CourtActs, CourtAddresses
from palais.mailbox.submission import SubmissionDesk
from palais.pki.identify import CertificateRefused
from palais.pki.signing import EvidenceKey, load_certificates
from palais.storage import Storage, open_storage
from palais.storage.audit import AuditLog
from palais.storage.blob_sweep import BlobSweeper, SweepCounts
from palais.storage.delegation import Delegations, write_acted_for
from palais.storage.departure import DepartureRunner
from palais.storage.dossier_life import DossierLives, PurgeRunner
from palais.storage.dossier_search import DossierSearch
from palais.storage.engine import is_sqlite
from palais.storage.filing_process import FilingProcess
from palais.storage.hearing_slots import HearingSlotsStore
from palais.storage.indexing import IndexerProcess
from palais.storage.registry import RegistryStore
from palais.trust_live import LiveTrust

log = logging.getLogger("palais")


def open_instance_storage(
    settings: Settings, key: EvidenceKey | None = None, *, worker: bool = False
) -> Storage:
    """The instance's stores; ``worker``: receipts written in a worker process
    (the gateway; a command that issues a few needs none)."""
    # No silent migration at start: `palais migrate` upgrades the schema once
    # (for every node); a database at another revision stops the start here.
    evidence = instance_evidence(settings, key, worker=worker)
    try:
        return open_storage(
            settings.database_url(),
            settings.storage.blobs,
            max_batch=settings.storage.max_batch,
            migrate=False,
            evidence=evidence,
            enrolment=EnrolmentPolicy(settings.accounts.enrolment),
            # One node of several on PostgreSQL: changes heard through LISTEN/NOTIFY.
            node=settings.instance.node or None,
        )
    except BaseException:
        evidence.close()
        raise


def certificate_check(identify: Callable[[bytes], CertificateIdentity]) -> CertificateCheck:
    """The session watcher's check of one open session's certificate: the
    trust in force now (``identify``: revocation, dates, anchors) and the
    roles its listener accepts. None if it still holds, else the log's reason."""

    def check(der: bytes, listener: str) -> str | None:
        try:
            cert = identify(der)
        except CertificateRefused as refused:
            return refused.reason
        if cert.role not in listener_roles(Listener(listener)):
            return f"role {cert.role} no longer accepted on {listener}"
        return None

    return check


@dataclass
class Gateway:
    settings: Settings
    storage: Storage | None = None
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    https: HttpsHandle | None = None
    recorded: GatewayMetrics = field(default_factory=GatewayMetrics)
    evidence: EvidenceKey | None = None
    sessions: SessionWatcher | None = None
    trust: LiveTrust | None = None
    audit: AuditLog | None = None
    # Workers of `palais serve --workers` share the ports (SO_REUSEPORT).
    reuse_port: bool = False
    departures: DepartureRunner | None = None
    # Dossier events applied and Fiches kept (refresh_fiche for other flows).
    lives: DossierLives | None = None
    purges: PurgeRunner | None = None
    indexer: IndexerProcess | None = None
    filings: FilingProcess | None = None
    alerts: Alerts | None = None
    relay: RelayWorker | None = None
    blob_sweep: BlobSweeper | None = None
    _sweep_counts: SweepCounts | None = None
    _indexer_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.evidence = evidence_key(s)
        self.storage = storage = open_instance_storage(s, self.evidence, worker=True)
        storage.start()
        # SMTP ingest's filings on a second core (PostgreSQL has --workers).
        # Not with a key on an HSM: the gateway keeps its one session on the
        # token, whose going away then stops acceptance at once (451).
        if (
            is_sqlite(s.database_url())
            and s.storage.filing_process
            and not s.evidence.pkcs11_module
        ):
            self.filings = filings = FilingProcess(
                s.database_url(),
                s.storage.blobs,
                open_evidence=partial(filing_evidence, s),
                publish=storage.hub.publish,
                on_erased=storage.commits.tell_erased,
                max_batch=s.storage.max_batch,
            )
            # Spawned now (its interpreter starts while the gateway does): a
            # start at the first filing cost the first burst a tenth of its rate.
            await filings.start()
            storage.mail.filer = filings.file
        # The substring index is written by a process of its own, off the filing path.
        self.indexer = IndexerProcess(s.database_url(), s.storage.blobs)
        self.indexer.start()
        self._indexer_watch = asyncio.create_task(_watch(self.indexer))
        if storage.notifications is not None:
            storage.notifications.start(asyncio.get_running_loop())
        self.recorded.node = s.instance.node
        # Refusals of every listener, queued and written in batches by the writer.
        self.audit = audit = AuditLog(storage.commits)
        if self.filings is None:
            self.recorded.watch_writer(storage.commits)
        else:
            self.recorded.watch_writer(AllWriters((storage.commits, self.filings)))
            self.recorded.watch_filings(self.filings)
        # What to trust comes from the database (seeded from [trust] files
        # when empty) and follows its changes without a restart.
        self.trust = live = LiveTrust(s)
        await asyncio.to_thread(live.load)
        contexts = {
            listener: live.listener_context(listener)
            for listener in (Listener.SMTPS, Listener.SUBMISSION, Listener.IMAPS, Listener.COURT)
        }

        def resolver(listener: Listener) -> Callable[[bytes], Awaitable[Identity]]:
            roles = listener_roles(listener)

            async def resolve_identity(der: bytes) -> Identity:
                try:
                    cert = live.identify(der)
                except CertificateRefused as refused:
                    raise NotAllowed(reason=str(refused)) from None
                # The handshake already kept other communities out; a resumed
                # session skips that check, this one does not.
                if cert.role not in roles:
                    raise NotAllowed(reason=f"role {cert.role} not accepted on {listener}")
                return await storage.directory.identity_for(cert)

            return resolve_identity

        # Lawyers' delegations: who may read and send for whom (a revocation
        # is seen within Delegations.TTL), each delegate's act audited.
        delegations = Delegations(storage.reader, storage.commits)
        storage.mail.add_record_writer(ActedFor, write_acted_for)
        # The dossier events court systems push, applied with the message
        # carrying them; each dossier's Fiche replaced (the desk's filer).
        self.lives = lives = DossierLives(
            storage.reader,
            storage.commits,
            storage.mail,
            zone=ZoneInfo(s.departures.timezone),
            sender=f"ne-pas-repondre@{s.instance.mail_domain}",
            # Alerts tell who follows the dossier, with the event (Alerts
            # registers its writer at start, before anything is filed).
            notices=lambda number, at: (DossierEventAlert(number, at),),
            # A dossier created, or a lawyer joining it, written to at once.
            forget_dossier=lambda number: storage.directory.forget_dossier(
                number, dossier_address(number, s.instance.mail_domain)
            ),
        )
        # Reference data read once (DirectoryFileError, an OSError, stops the start).
        juridictions = load_directory(directory_file(s.root))
        # Saisines and constitutions to the juridictions' addresses, and their decisions.
        registry = RegistryStore(storage.reader, storage.commits, storage.mail)
        # A decision on a lawyer's message: its receipt filed with the decision mail.
        storage.mail.add_record_writer(MessageDecided, registry.write_message_decided)
        court_acts = CourtActs(
            juridictions,
            lives,  # storage.mail, keeping the hearing slots a court system publishes
            registry,
            mail_domain=s.instance.mail_domain,
            dossier_changed=lives.participants_changed,
        )
        desk = SubmissionDesk(
            CourtAddresses(storage.directory, juridictions),
            lives,
            max_size=s.smtp.max_message_size,
            resend_window=s.smtp.resend_window,
            delegations=delegations,
            court_acts=court_acts,
            decisions=MessageDecisions(registry),
            relayed=relayed_court_systems(s),
        )
        # What lawyers send to court systems with an SMTP endpoint: relayed
        # from the durable queue; what court systems push: DKIM-checked.
        self.relay = relay_worker(s, storage)
        court_check = arrival_check(s)
        loop = asyncio.get_running_loop()
        host = s.listen.host
        limits = s.limits
        # Open sessions re-checked against revocation and deactivation.
        self.sessions = watcher = SessionWatcher(
            check_certificate=certificate_check(live.identify),
            standing=storage.directory.standing,
            interval=limits.session_check_interval,
            log=logging.getLogger("palais.sessions"),
            audit=audit,  # each closure recorded as "session-closed"
        )
        # One count for every listener together, and per client address.
        admission = Admission(
            max_connections=limits.max_connections,
            max_per_address=limits.max_connections_per_address,
        )
        smtp_log = logging.getLogger("palais.smtp")

        stored_slots = HearingSlotsStore(storage.reader)

        async def documents(who: Identity, data: bytes) -> None:
            if not may_carry_documents(data):
                return  # most messages: a look at the part headers, as before
            # A booked slot is checked against the lists as stored, whichever
            # node filed the court's last one (the saisine's transaction
            # checks it again, with the places left: take_place).
            booked = booked_juridictions(data)
            slots = {code: await stored_slots.opened(code) for code in booked}
            refuse_invalid(data, slots, who.role)

        def smtp(listener: Listener, door: Gate, implicit: bool) -> Callable[[], PalaisSMTP]:
            return make_smtp_factory(
                desk=desk,
                listener=listener,
                resolve_identity=resolver(listener),
                allowed_roles=listener_roles(listener),
                hostname=s.instance.hostname,
                max_size=s.smtp.max_message_size,
                max_recipients=s.smtp.max_recipients,
                timeout=s.smtp.timeout,
                documents=documents,
                arrival_check=court_check if listener is Listener.COURT else None,
                starttls_context=None if implicit else contexts[listener],
                metrics=self.recorded,
                door=door,
                preauth_timeout=limits.preauth_timeout,
                handshake_timeout=limits.handshake_timeout,
                watcher=watcher,
                audit=audit,
            )

        def door(listener: Listener) -> Gate:
            return Gate(
                listener,
                admission,
                goodbye=SMTP_GOODBYE,
                metrics=self.recorded,
                log=smtp_log,
                audit=audit,  # refusals by a cap, rate-limited as the log line
            )

        # SMTPS runs on the same TLS layer as IMAPS: admission before the
        # handshake, an alert and a log line for a refused one.
        smtps_door = door(Listener.SMTPS)
        smtps_app = smtp(Listener.SMTPS, smtps_door, True)
        smtps_refused = refusal_logger(smtp_log, Listener.SMTPS, audit)

        def smtps() -> asyncio.Protocol:
            return TlsServerProtocol(
                contexts[Listener.SMTPS],
                gate=smtps_door,
                on_failure=smtps_refused,
                handshake_timeout=limits.handshake_timeout,
                app_factory=smtps_app,
            )

        reuse = self.reuse_port or None
        self.servers.append(await loop.create_server(smtps, host, s.listen.smtps, reuse_port=reuse))
        for listener, port in (
            (Listener.SUBMISSION, s.listen.submission),
            (Listener.COURT, s.listen.court),
        ):
            factory = smtp(listener, door(listener), False)
            self.servers.append(await loop.create_server(factory, host, port, reuse_port=reuse))

        self.servers.append(
            await start_imap_server(
                host=host,
                port=s.listen.imaps,
                ssl_context=contexts[Listener.IMAPS],
                access=DelegatedAccess(storage.mail, delegations, delegations.acted),
                resolve_identity=resolver(Listener.IMAPS),
                log=logging.getLogger("palais.imap"),
                max_append_size=s.imap.max_append_size,
                max_search_keys=s.imap.max_search_keys,
                max_search_cost=s.imap.max_search_cost,
                max_keywords=s.imap.max_keywords,
                max_keyword_length=s.imap.max_keyword_length,
                idle_timeout=s.imap.idle_timeout,
                metrics=self.recorded,
                admission=admission,
                handshake_timeout=limits.handshake_timeout,
                preauth_timeout=limits.preauth_timeout,
                watcher=watcher,
                audit=audit,
                reuse_port=self.reuse_port,
            )
        )
        watcher.start()
        # Departures due (00:00 the day after the last day, [departures]
        # timezone) carried out once each, whatever the number of nodes.
        self.departures = DepartureRunner(
            storage.reader,
            storage.commits,
            zone=ZoneInfo(s.departures.timezone),
            interval=s.departures.check_interval,
        )
        self.departures.start()
        # Terminated dossiers purged once their retention is over, receipts excepted.
        self.purges = PurgeRunner(
            storage.reader,
            storage.commits,
            retention=timedelta(days=s.dossiers.retention_days),
            interval=s.dossiers.purge_interval,
            purged=storage.directory.forget_dossier,
        )
        self.purges.start()
        if not is_sqlite(s.database_url()):
            # Large objects of rolled-back batches, which no blob row names, unlinked.
            self.blob_sweep = BlobSweeper(
                storage.writer_engine,
                grace=timedelta(seconds=s.storage.blob_sweep_grace),
                interval=s.storage.blob_sweep_interval,
            )
            self._sweep_counts = SweepCounts(self.blob_sweep)
            self.recorded.registry.register(self._sweep_counts)
            self.blob_sweep.start()
        # Notices to outside addresses, derived from what is filed; sent through [alerts] relay.
        self.alerts = alerts = Alerts.open(s, storage)
        self.recorded.watch_lifecycle(
            audit=audit, sessions=watcher, departures=self.departures, crls=live
        )
        key = self.evidence

        def printable(evidence: Mapping[str, Any]) -> bytes:
            # Imported at the first PDF asked for (in a worker thread): pyHanko
            # and reportlab, with what they import, took a third of the
            # gateway's start and most of it is never used.
            from palais.pki.printable import receipt_pdf

            return receipt_pdf(evidence, key)

        self.https = await start_https(
            host=host,
            port=s.listen.https,
            cert=s.tls.certificate,
            key=s.tls.key,
            anchors=live.https_material(LISTENER_COMMUNITIES[Listener.HTTPS])[0],
            crls=live.https_material(LISTENER_COMMUNITIES[Listener.HTTPS])[1],
            resolve_identity=resolver(Listener.HTTPS),
            metrics=self.recorded,
            admission=admission,
            audit=audit,
            reuse_port=self.reuse_port,
            health=node_health(storage) if storage.notifications is not None else None,
            log=logging.getLogger("palais.https"),
            routes={
                PRINTABLE_PREFIX: receipts_route(storage.mail.held_evidence, printable),
                VERIFIER_PREFIX: verifier_route(load_certificates(s.evidence.anchor), printable),
                DELEGATIONS_PREFIX: delegations_route(delegations),
                JURIDICTIONS_PATH: juridictions_route(juridictions),
                DOSSIERS_PATH: dossier_search_route(
                    juridictions, DossierSearch(storage.reader).search
                ),
                alerts.path: alerts.route,
            },
            address_domains=storage.directory.address_domains,
            autoconfig={
                "hostname": s.instance.hostname,
                "imaps_port": s.listen.imaps,
                "smtps_port": s.listen.smtps,
                "domain": s.instance.mail_domain,
                "display_name": s.instance.name,
            },
        )
        live.attach_https(self.https, LISTENER_COMMUNITIES[Listener.HTTPS])
        live.start()
        alerts.start(self.recorded.registry)
        if self.relay is not None:
            self.recorded.watch_relay(self.relay)
            self.relay.start()
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
        if self.relay is not None:
            await self.relay.stop()  # its last outcome recorded before the writer stops
            self.relay = None
        if self._indexer_watch is not None:
            self._indexer_watch.cancel()
            self._indexer_watch = None
        if self.indexer is not None:
            await asyncio.to_thread(self.indexer.stop)
            self.indexer = None
        if self.alerts is not None:
            await self.alerts.stop()  # the send in flight recorded before the writer stops
            self.alerts = None
        if self.departures is not None:
            await self.departures.stop()
            self.departures = None
        if self.purges is not None:
            await self.purges.stop()
            self.purges = None
        if self.blob_sweep is not None:
            await self.blob_sweep.stop()
            self.blob_sweep = None
        if self._sweep_counts is not None:
            self.recorded.registry.unregister(self._sweep_counts)
            self._sweep_counts = None
        if self.sessions is not None:
            await self.sessions.stop()
            self.sessions = None
        if self.trust is not None:
            await self.trust.stop()
            self.trust = None
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
        if self.filings is not None:
            if self.storage is not None:
                self.storage.mail.filer = None
            # What it was sent is filed and answered before the writer stops.
            await self.filings.stop()
            self.filings = None
        if self.audit is not None:
            await self.audit.close()  # the last refusals, before the writer stops
            self.audit = None
        if self.storage is not None:
            # Commits everything already queued: a message whose 250 was sent
            # is on disk already; one in flight is stored even if its client left.
            await asyncio.to_thread(self.storage.close)
            self.storage = None


async def _watch(indexer: IndexerProcess, every: float = 30.0) -> None:
    """The indexing process started again if it died: searches stay right
    without it, only slower."""
    while True:
        await asyncio.sleep(every)
        indexer.restart_if_dead()


def node_health(storage: Storage) -> Callable[[], Awaitable[dict[str, Any]]]:
    """/health of a node of several: can it reach the database, does it hear the others."""

    def database() -> dict[str, Any]:
        try:
            with storage.reader.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as error:
            return {"ok": False, "error": type(error).__name__}
        return {"ok": True}

    async def check() -> dict[str, Any]:
        bus = storage.notifications
        assert bus is not None
        notes = bus.health()
        return {
            "node": bus.node,
            "database": await asyncio.to_thread(database),
            "notifications": {"ok": notes["connected"], **notes},
        }

    return check


async def serve(settings: Settings, *, node: str | None = None, reuse_port: bool = False) -> None:
    """Run the gateway until SIGTERM or SIGINT; ``node``: this process's node
    id among several on one PostgreSQL; ``reuse_port``: a worker of several."""
    # Everything the gateway creates from now on (database companions, blob
    # segments, logs) is owner-only, and what exists already is made so.
    os.umask(OWNER_ONLY_UMASK)
    secure_instance(settings)
    if node:
        settings = replace(settings, instance=replace(settings.instance, node=node))
    gateway = Gateway(settings, reuse_port=reuse_port)
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
