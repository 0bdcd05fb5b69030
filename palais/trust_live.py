"""Trust in force, live: what the database says, applied without a restart.

Where trust lives: the ``trust_anchor``/``trust_crl`` tables
(``palais.storage.trust``), seeded from the [trust] files of palais.toml
when empty. Operators change it with ``palais admin trust``/``crl``
(:func:`add_trust`, :func:`remove_trust`, :func:`import_crl`), and each node
fetches CRLs from its CAs' distribution points (:func:`fetch_crls`); every
change bumps ``trust_state.generation``.

How nodes pick changes up: :class:`LiveTrust` polls the generation every
``[trust] watch_interval`` seconds; on a new one it builds, in a thread, a
new ``TrustAnchors`` (what ``identify`` checks) and a new TLS context per
listener, then swaps them in. New connections get the new ones; open
connections keep the context they were verified with (closing sessions
whose certificate became revoked is the sessions' watcher's business).

The grace of a stale CRL: ``TrustAnchors`` keeps using a CRL for
``crl_grace`` seconds past its nextUpdate; OpenSSL has no such notion, so
while some CRL is in its grace the listeners' contexts leave time checks to
``identify`` (see ``palais.pki.tls.server_context_from_pem``), and the
watcher rebuilds them when that set of CRLs changes (into the grace, out of
it). After the grace every client of that CA is refused, by both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine

from palais.config import Settings
from palais.mailbox.audit import GATEWAY_ACTOR, AuditAction
from palais.mailbox.identity import CertificateIdentity, TrustCommunity
from palais.mailbox.routing import LISTENER_COMMUNITIES, Listener
from palais.pki.identify import TrustAnchors, TrustedCa
from palais.pki.tls import ReloadableServerContext, server_context_from_pem
from palais.pki.trust_update import (
    CaInfo,
    CrlRejected,
    CrlUnchanged,
    TrustRejected,
    check_crl,
    community,
    crl_issuer,
    describe_ca,
    fetch_crl,
    issued_by,
    periodically,
)
from palais.storage import trust as store
from palais.storage.engine import make_engine

if TYPE_CHECKING:  # the HTTPS listener's twisted stays out of `palais admin`
    from palais.gateway.https import HttpsHandle

__all__ = [
    "FetchOutcome",
    "LiveTrust",
    "add_trust",
    "fetch_crls",
    "import_crl",
    "remove_trust",
    "seed_from_settings",
    "trust_files",
]

log = logging.getLogger("palais.trust")

_COMMUNITIES = frozenset(c.value for c in TrustCommunity)


def anchors_of(
    trust: store.TrustSet,
    grace: timedelta,
    *,
    clock: Callable[[], datetime] | None = None,
) -> TrustAnchors:
    """What the gateway trusts, from the stored CAs and CRLs."""
    return TrustAnchors.from_pem(
        [
            TrustedCa(
                community=TrustCommunity(a.community),
                pem=a.pem.encode("ascii"),
                intermediate=a.kind == store.INTERMEDIATE,
            )
            for a in trust.anchors
            if a.community in _COMMUNITIES
        ],
        [(c.source, c.pem.encode("ascii")) for c in trust.crls],
        crl_grace=grace,
        clock=clock,
    )


_SEED_REASON = "seeded from the [trust] files of palais.toml"


def trust_files(settings: Settings) -> dict[TrustCommunity, Path]:
    """The [trust] anchor file of each community."""
    t = settings.trust
    return {
        TrustCommunity.AVOCATS: t.avocats,
        TrustCommunity.JUSTICE: t.justice,
        TrustCommunity.COURT_SYSTEMS: t.juridictions,
        TrustCommunity.ADMIN: t.admin,
    }


# --- operators' changes (blocking; the engine must be a writer engine) --------------


def seed_from_settings(engine: Engine, settings: Settings) -> bool:
    """Fill empty trust tables from the [trust] files; False if they were not empty.

    Existing instances and ``palais init`` keep working: the files they were
    configured with become the stored trust on the first start.
    """
    if store.anchors(engine, removed=True):
        return False  # cheap test first: the files are not even read
    infos: list[tuple[TrustCommunity, CaInfo]] = []
    for group, path in trust_files(settings).items():
        data = path.read_bytes()
        blocks = _pem_blocks(data) if b"-----BEGIN" in data else [data]
        infos.extend((group, describe_ca(block)) for block in blocks)
    now = datetime.now(UTC)
    newest: dict[str, store.NewCrl] = {}
    for path in settings.trust.crls:
        data = path.read_bytes()
        ca = crl_issuer(data, [info for _, info in infos])
        checked = check_crl(
            data, ca, current_number=None, current_this_update=None, now=now, allow_stale=True
        )
        known = newest.get(ca.fingerprint)
        if known is None or checked.this_update > known.this_update:
            newest[ca.fingerprint] = store.NewCrl(
                issuer=ca.fingerprint,
                pem=checked.pem.decode("ascii"),
                number=checked.number,
                this_update=checked.this_update,
                next_update=checked.next_update,
                source=f"seed:{path.name}",
            )
    anchors = [
        store.NewAnchor(
            community=group.value,
            kind=store.ANCHOR if info.self_issued else store.INTERMEDIATE,
            fingerprint=info.fingerprint,
            subject=info.subject,
            pem=info.pem.decode("ascii"),
        )
        for group, info in infos
    ]
    return store.seed(
        engine, anchors, list(newest.values()), actor=GATEWAY_ACTOR, reason=_SEED_REASON
    )


def add_trust(
    engine: Engine, community_name: str, data: bytes, *, actor: str, reason: str | None
) -> store.NewAnchor:
    """Trust a CA for one community: an anchor (self-signed) or an
    intermediate, which must be signed by a CA of the same community in force.

    TrustRejected (or store.AlreadyTrusted) says why not.
    """
    group = community(community_name)
    info = describe_ca(data)
    stored = store.anchors(engine)
    in_force = [(s, describe_ca(s.pem.encode("ascii"))) for s in stored]
    for row, other in in_force:
        if row.community != group.value and _same_key(other, info):
            # identify() would not know which community's roles apply.
            raise TrustRejected(f"{info.subject}: its key is trusted for {row.community} already")
    if not info.self_issued:
        parents = [other for row, other in in_force if row.community == group.value]
        if issued_by(info, parents) is None:
            raise TrustRejected(
                f"{info.subject} is not self-signed and no {group} CA in force signed it: "
                "add its anchor first"
            )
    anchor = store.NewAnchor(
        community=group.value,
        kind=store.ANCHOR if info.self_issued else store.INTERMEDIATE,
        fingerprint=info.fingerprint,
        subject=info.subject,
        pem=info.pem.decode("ascii"),
    )
    store.add_anchor(engine, anchor, actor=actor, reason=reason)
    return anchor


def remove_trust(
    engine: Engine, fingerprint: str, *, actor: str, reason: str | None
) -> store.StoredAnchor:
    """Stop trusting a CA: its clients (and its intermediates') are refused."""
    return store.remove_anchor(
        engine, normalise_fingerprint(fingerprint), actor=actor, reason=reason
    )


def import_crl(
    engine: Engine,
    data: bytes,
    *,
    source: str,
    actor: str,
    reason: str | None,
    action: AuditAction = AuditAction.CRL_IMPORTED,
    now: datetime | None = None,
) -> store.NewCrl:
    """Put a CRL in force for the CA in use that signed it, if it is newer.

    CrlRejected (CrlUnchanged for the one in force) says why not.
    """
    cas = [describe_ca(s.pem.encode("ascii")) for s in store.anchors(engine)]
    ca = crl_issuer(data, cas)
    when = now if now is not None else datetime.now(UTC)

    def decide(current: store.StoredCrl | None) -> store.NewCrl:
        checked = check_crl(
            data,
            ca,
            current_number=current.number if current is not None else None,
            current_this_update=current.this_update if current is not None else None,
            now=when,
        )
        return store.NewCrl(
            issuer=ca.fingerprint,
            pem=checked.pem.decode("ascii"),
            number=checked.number,
            this_update=checked.this_update,
            next_update=checked.next_update,
            source=source,
        )

    return store.put_crl(engine, ca.fingerprint, decide, actor=actor, action=action, reason=reason)


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    ca: str  # fingerprint
    url: str
    result: str  # "fetched", "unchanged", "rejected", "unreachable"
    detail: str = ""


def fetch_crls(
    engine: Engine,
    *,
    timeout: float,
    now: datetime | None = None,
    fetch: Callable[[str], bytes] | None = None,
) -> list[FetchOutcome]:
    """One round: each CA's CRL from the first of its distribution points that answers.

    Blocking; run in a thread. A rejected CRL (bad signature, older number)
    is logged and leaves the one in force alone.
    """
    get = fetch if fetch is not None else (lambda url: fetch_crl(url, timeout=timeout))
    outcomes: list[FetchOutcome] = []
    for row in store.anchors(engine):
        info = describe_ca(row.pem.encode("ascii"))
        for url in info.crl_urls:
            try:
                data = get(url)
            except OSError as exc:
                log.warning("CRL fetch failed ca=%s url=%s reason=%s", info.subject, url, exc)
                outcomes.append(FetchOutcome(info.fingerprint, url, "unreachable", str(exc)))
                continue
            try:
                # The CRL at a CA's address may be its issuer's (a CA
                # certificate's CRLDP names the CRL that would revoke it):
                # whichever CA in use signed it gets it.
                new = import_crl(
                    engine,
                    data,
                    source=url,
                    actor=GATEWAY_ACTOR,
                    reason="fetched from a CRL distribution point",
                    action=AuditAction.CRL_FETCHED,
                    now=now,
                )
            except CrlUnchanged:
                outcomes.append(FetchOutcome(info.fingerprint, url, "unchanged"))
            except CrlRejected as exc:
                log.warning("CRL refused ca=%s url=%s reason=%s", info.subject, url, exc)
                outcomes.append(FetchOutcome(info.fingerprint, url, "rejected", str(exc)))
                continue
            else:
                log.info("CRL fetched ca=%s url=%s number=%s", info.subject, url, new.number)
                outcomes.append(FetchOutcome(info.fingerprint, url, "fetched"))
            break
    return outcomes


def normalise_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as stored: lower-case hex, colons and spaces dropped."""
    return text.replace(":", "").replace(" ", "").strip().lower()


# --- the watcher ---------------------------------------------------------------------


class LiveTrust:
    """What one node trusts now, and the listeners' contexts that follow it."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._settings = settings
        t = settings.trust
        self._grace = timedelta(seconds=t.crl_grace)
        self._clock = clock if clock is not None else (lambda: datetime.now(UTC))
        url = settings.database_url()
        # Its own engines: the storage writer keeps its single connection
        # for the commit queue; SQLite serialises through BEGIN IMMEDIATE.
        self._writer = make_engine(url, writer=True)
        self._reader = make_engine(url, writer=False)
        self._lock = threading.Lock()  # one rebuild at a time
        self.generation = -1
        self._lenient = False
        self._anchors: TrustAnchors | None = None
        self._contexts: dict[Listener, ReloadableServerContext] = {}
        self._https: list[tuple[HttpsHandle, frozenset[TrustCommunity]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribers: list[Callable[[TrustAnchors], object]] = []
        # CRL fetch outcomes by result, since start (read by /metrics).
        self.crl_fetches: dict[str, int] = {}

    @property
    def writer(self) -> Engine:
        return self._writer

    @property
    def anchors(self) -> TrustAnchors:
        if self._anchors is None:
            raise RuntimeError("LiveTrust.start() was not called")
        return self._anchors

    def identify(self, der: bytes) -> CertificateIdentity:
        """``TrustAnchors.identify`` against the trust in force now."""
        return self.anchors.identify(der)

    def load(self) -> None:
        """Seed if empty, then read the trust in force (blocking, at start).

        Raises on failure: a node that cannot read what to trust must not serve.
        """
        if seed_from_settings(self._writer, self._settings):
            log.info("trust tables seeded from the [trust] files")
        self._refresh(force=True)

    def listener_context(self, listener: Listener) -> ssl.SSLContext:
        """The context to give a stdlib listener: the same object for its whole
        life, moving each new connection onto the newest trust."""
        reloadable = self._contexts.get(listener)
        if reloadable is None:
            groups = LISTENER_COMMUNITIES[listener]
            reloadable = ReloadableServerContext.from_builder(lambda: self._build(groups))
            self._contexts[listener] = reloadable
        return reloadable.context

    def attach_https(self, handle: HttpsHandle, communities: Iterable[TrustCommunity]) -> None:
        """Keep the HTTPS listener's context on the newest trust too."""
        groups = frozenset(communities)
        self._https.append((handle, groups))

    def subscribe(self, callback: Callable[[TrustAnchors], object]) -> None:
        """Call ``callback(anchors)`` on the event loop after each change is in
        force: for whoever re-checks open sessions against the new trust (a
        revoked certificate's session is not closed by the TLS layer)."""
        self._subscribers.append(callback)

    def https_material(
        self, communities: Iterable[TrustCommunity]
    ) -> tuple[list[bytes], list[bytes]]:
        """(CAs, CRLs) as PEM for starting the HTTPS listener."""
        return self.anchors.ca_pems(communities), self.anchors.crl_pems()

    def start(self) -> None:
        """The polling task and, if enabled, the CRL fetch schedule (on the running loop)."""
        t = self._settings.trust
        self._tasks.append(asyncio.create_task(self._watch(t.watch_interval), name="trust-watch"))
        if t.crl_fetch:
            self._tasks.append(
                asyncio.create_task(
                    periodically(
                        t.crl_fetch_interval,
                        lambda: self._count(fetch_crls(self._writer, timeout=t.crl_fetch_timeout)),
                        name="CRL fetch",
                    ),
                    name="trust-crl-fetch",
                )
            )

    def _count(self, outcomes: list[FetchOutcome]) -> None:
        # For /metrics: fetched, unchanged, rejected, unreachable (in the fetch thread).
        for outcome in outcomes:
            self.crl_fetches[outcome.result] = self.crl_fetches.get(outcome.result, 0) + 1

    def stale_crls(self) -> tuple[int, int]:
        """For /metrics: (CAs whose CRL is past nextUpdate within the grace, beyond it)."""
        if self._anchors is None:
            return 0, 0
        in_grace, beyond = self._anchors.stale_crls(self._clock())
        return len(in_grace), len(beyond)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._writer.dispose()
        self._reader.dispose()

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                changed = await asyncio.to_thread(self._refresh)
            except Exception:
                # The database away, a context that cannot be built: what is
                # in force stays in force, and the next tick tries again.
                log.exception("trust refresh failed; keeping generation %d", self.generation)
                continue
            if changed:
                for callback in self._subscribers:
                    try:
                        callback(self.anchors)
                    except Exception:
                        log.exception("trust change subscriber failed")

    def _refresh(self, *, force: bool = False) -> bool:
        """Rebuild if the generation or the set of CRLs in grace changed."""
        with self._lock:
            generation = store.generation(self._reader)
            if force or generation != self.generation or self._anchors is None:
                trust = store.current(self._reader)
                anchors = anchors_of(trust, self._grace, clock=self._clock)
                for problem in anchors.problems:
                    log.warning("trust generation %d: %s", trust.generation, problem)
                generation = trust.generation
            else:
                anchors = self._anchors
            in_grace, _beyond = anchors.stale_crls(self._clock())
            lenient = bool(in_grace)
            if anchors is self._anchors and lenient == self._lenient:
                return False
            self._anchors = anchors
            self._lenient = lenient
            for reloadable in self._contexts.values():
                reloadable.reload()
            for handle, groups in self._https:
                cas, crls = self.https_material(groups)
                handle.reload_trust(cas, crls, lenient_time=lenient)
            changed = generation != self.generation
            self.generation = generation
            if changed:
                log.info("trust generation %d in force", generation)
            return True

    def _build(self, groups: frozenset[TrustCommunity]) -> ssl.SSLContext:
        s = self._settings
        return server_context_from_pem(
            s.tls.certificate,
            s.tls.key,
            self.anchors.ca_pems(groups),
            self.anchors.crl_pems(),
            scratch=s.root,
            lenient_time=self._lenient,
        )


def _pem_blocks(data: bytes) -> list[bytes]:
    return [
        cert.public_bytes(serialization.Encoding.PEM)
        for cert in x509.load_pem_x509_certificates(data)
    ]


def _same_key(a: CaInfo, b: CaInfo) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return bool(
        a.cert.public_key().public_bytes(enc, fmt) == b.cert.public_key().public_bytes(enc, fmt)
    )
