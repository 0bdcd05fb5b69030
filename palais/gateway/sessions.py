"""Open sessions re-checked while they last: revoked certificates and deactivated accounts cut.

A session proves who it is once, at the handshake and login; an IMAP client
may then idle for hours. The watcher keeps every open session whose
certificate proved an identity and, at an interval, checks them all against
the trust in force now (certificate revoked or expired, its anchor removed,
its role no longer accepted on the listener) and against the directory (the
account deactivated, or the certificate no longer linked to that account).
Each session that fails is told why in plain words and closed by its own
protocol (IMAP ``BYE [ALERT]``, SMTP ``421``): ``Watched.end_session``.

The cost stays flat in the number of sessions: sessions are grouped by
certificate and listener (one DER kept per group, not per session), one
directory read serves a whole check, and there is no task or timer per
session, only one set entry. The blocking parts (certificate checks, the
database) run off the event loop.

Failure policy: a certificate check needs no database, so revocation is
enforced even while the database is away; if the directory read fails, the
accounts are not judged this time and every session stays open (a database
outage must not log everyone out; the next check catches up). An unexpected
error checking one certificate keeps that session open too, and is logged:
only a definite verdict closes a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from palais.mailbox.audit import AuditAction, RefusalAudit
from palais.mailbox.identity import Identity

__all__ = [
    "ACCOUNT_CHANGED",
    "ACCOUNT_DEACTIVATED",
    "CERTIFICATE_NO_LONGER_VALID",
    "AccountStanding",
    "CertificateCheck",
    "Closure",
    "Registration",
    "SessionWatcher",
    "Watched",
]

# What the client is told: plain words, nothing of the internal reason.
CERTIFICATE_NO_LONGER_VALID: Final = (
    "Your certificate is no longer accepted (revoked, expired or no longer trusted)"
)
ACCOUNT_DEACTIVATED: Final = "Your account has been deactivated"
ACCOUNT_CHANGED: Final = "Your certificate is no longer linked to this account"

# The log's and the audit's word for each.
_CODES: Final = {
    CERTIFICATE_NO_LONGER_VALID: "certificate-refused",
    ACCOUNT_DEACTIVATED: "account-deactivated",
    ACCOUNT_CHANGED: "account-changed",
}


class Watched(Protocol):
    """A session the watcher can close."""

    def end_session(self, reason: str) -> None:
        """Tell the client ``reason`` (plain words) and close.

        Called again at the next check if the session is still open: a
        session may put off the first call until its running command has
        answered (nothing accepted is lost), not the second.
        """
        ...


class CertificateCheck(Protocol):
    def __call__(self, der: bytes, listener: str) -> str | None:
        """Blocking: None if the certificate is still accepted on ``listener``
        now, else the reason for the log."""
        ...


class AccountStanding(Protocol):
    async def __call__(self, fingerprints: Collection[str]) -> Mapping[str, tuple[int, bool]]:
        """(account id, active) of the account each certificate is linked to,
        read fresh, all in one go; a certificate linked to none is absent."""
        ...


@dataclass(frozen=True, slots=True)
class Closure:
    """One session closed by the watcher: what the log line and the audit record say."""

    listener: str
    address: str
    account_id: int
    fingerprint: str
    code: str  # certificate-refused, account-deactivated, account-changed
    reason: str  # what the client was told
    detail: str  # for the log only (issuer, serial, dates)


class Registration:
    """The sessions of one certificate and account on one listener.

    Opaque to callers: what ``register`` returns and ``unregister`` takes back.
    """

    __slots__ = ("account_id", "address", "der", "ending", "fingerprint", "listener", "sessions")

    def __init__(self, listener: str, der: bytes, identity: Identity) -> None:
        self.listener = listener
        self.der = der
        self.fingerprint = identity.fingerprint
        self.account_id = identity.account_id
        self.address = identity.address
        self.sessions: set[Watched] = set()
        # Sessions already told to go (logged once; asked again if still open).
        self.ending: set[Watched] | None = None


_Key = tuple[str, str, int]  # listener, fingerprint, account id


class SessionWatcher:
    def __init__(
        self,
        *,
        check_certificate: CertificateCheck,
        standing: AccountStanding,
        interval: float,
        log: logging.Logger,
        audit: RefusalAudit | None = None,
    ) -> None:
        """``audit`` records each closure ("session-closed") after its log
        line; it queues and never blocks, and its errors are logged, not raised."""
        self._check_certificate = check_certificate
        self._standing = standing
        self.interval = interval
        self._log = log
        self._audit = audit
        self._groups: dict[_Key, Registration] = {}
        self._task: asyncio.Task[None] | None = None
        # Sessions closed, by code (certificate-refused, account-deactivated,
        # account-changed), for /metrics.
        self.closed: dict[str, int] = dict.fromkeys(_CODES.values(), 0)

    # -- registry ----------------------------------------------------------------

    def register(
        self, session: Watched, *, listener: str, der: bytes, identity: Identity
    ) -> Registration:
        key = (listener, identity.fingerprint, identity.account_id)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Registration(listener, der, identity)
        group.sessions.add(session)
        return group

    def unregister(self, session: Watched, registration: Registration) -> None:
        """Forget a session that ended (whatever ended it); safe to call twice."""
        registration.sessions.discard(session)
        if registration.ending is not None:
            registration.ending.discard(session)
            if not registration.ending:
                registration.ending = None
        if not registration.sessions:
            key = (registration.listener, registration.fingerprint, registration.account_id)
            if self._groups.get(key) is registration:
                del self._groups[key]

    def __len__(self) -> int:
        """Open sessions watched."""
        return sum(len(group.sessions) for group in self._groups.values())

    @property
    def certificates(self) -> int:
        """Groups kept (one DER each): certificates x accounts x listeners in use."""
        return len(self._groups)

    # -- the periodic check ----------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a bug here must not stop later checks
                self._log.exception("session check failed")

    async def check(self) -> list[Closure]:
        """Check every open session once; close those that fail. Returns the closures."""
        groups = list(self._groups.values())
        if not groups:
            return []
        verdicts: dict[Registration, tuple[str, str]] = {}
        for group, detail in await asyncio.to_thread(self._check_certificates, groups):
            verdicts[group] = (CERTIFICATE_NO_LONGER_VALID, detail)
        try:
            standing = await self._standing({group.fingerprint for group in groups})
        except Exception as error:
            # Fail open: see the module's docstring.
            self._log.warning(
                "session check: directory unavailable, accounts not checked this time (%s)",
                type(error).__name__,
            )
        else:
            for group in groups:
                if group in verdicts:
                    continue
                found = standing.get(group.fingerprint)
                if found is None or found[0] != group.account_id:
                    verdicts[group] = (ACCOUNT_CHANGED, "certificate linked to another account")
                elif not found[1]:
                    verdicts[group] = (ACCOUNT_DEACTIVATED, "account deactivated")
        closures: list[Closure] = []
        for group, (reason, detail) in verdicts.items():
            closures.extend(self._close(group, reason, detail))
        return closures

    def _check_certificates(self, groups: list[Registration]) -> list[tuple[Registration, str]]:
        """In a worker thread: the groups whose certificate is no longer accepted."""
        refused: list[tuple[Registration, str]] = []
        for group in groups:
            try:
                detail = self._check_certificate(group.der, group.listener)
            except Exception:
                # No verdict, no closure: a bug must not log everyone out.
                self._log.exception(
                    "session check: certificate check failed fingerprint=%s", group.fingerprint
                )
                continue
            if detail is not None:
                refused.append((group, detail))
        return refused

    def _close(self, group: Registration, reason: str, detail: str) -> list[Closure]:
        closures: list[Closure] = []
        code = _CODES[reason]
        for session in list(group.sessions):
            if group.ending is not None and session in group.ending:
                # Told at an earlier check and still open (its command was
                # running): this time it goes at once. Logged already.
                session.end_session(reason)
                continue
            if group.ending is None:
                group.ending = set()
            group.ending.add(session)
            closure = Closure(
                listener=group.listener,
                address=group.address,
                account_id=group.account_id,
                fingerprint=group.fingerprint,
                code=code,
                reason=reason,
                detail=detail,
            )
            self._log.warning(
                "session closed listener=%s identity=%s fingerprint=%s reason=%s detail=%s",
                closure.listener,
                closure.address,
                closure.fingerprint,
                closure.code,
                closure.detail,
                extra={
                    "listener": closure.listener,
                    "identity": closure.address,
                    "fingerprint": closure.fingerprint,
                    "outcome": "session-closed",
                    "reason": closure.code,
                },
            )
            session.end_session(reason)
            if self._audit is not None:
                try:
                    self._audit.refused(
                        AuditAction.SESSION_CLOSED,
                        listener=closure.listener,
                        peer=None,  # not kept per session: a few bytes each, thousands of them
                        reason=f"{closure.code}: {closure.detail}",
                        subject=closure.address,
                        detail={
                            "fingerprint": closure.fingerprint,
                            "account_id": closure.account_id,
                        },
                    )
                except Exception:
                    self._log.exception("session closed: audit record failed")
            self.closed[code] += 1
            closures.append(closure)
        return closures
