"""Relay to court systems: which copies leave the gateway, and how long it tries.

A juridiction's court system either fetches what lawyers write to it over
IMAP (its INBOX, as anyone's), or has an SMTP endpoint of its own. For the
latter the filing plan does not place a copy in its INBOX: it carries a
``RelayOrder`` instead, which storage writes as a queue row in the filing's
own transaction (nothing accepted is lost, nothing is queued for a message
that was not filed). The relay then tries until the endpoint says 250,
waiting longer after each failure (``RetryRule``); a permanent refusal, or
no success within the give-up time, ends in a non-delivery receipt
(non-remise) to the sender.

Pure rules: no clock, no socket; the instants come in as values.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from palais.mailbox.filing import FilingPlan
from palais.mailbox.model import BoxKind, CommittedRecord

__all__ = [
    "Attempt",
    "Decision",
    "Outcome",
    "RelayItem",
    "RelayOrder",
    "RelayQueue",
    "RetryRule",
    "divert_to_relay",
]


@dataclass(frozen=True, slots=True)
class RelayOrder(CommittedRecord):
    """Queue this filing for the court system ``recipient``'s endpoint."""

    recipient: str  # the court system's address (its mailbox owner)
    sender: str  # the envelope sender: the identity that submitted it


def divert_to_relay(plan: FilingPlan, relayed: Collection[str], sender: str) -> FilingPlan:
    """``plan`` with each INBOX copy for a court system in ``relayed`` (those with an
    SMTP endpoint) replaced by a ``RelayOrder``; the plan itself if none is."""
    orders = tuple(
        RelayOrder(d.owner, sender)
        for d in plan.destinations
        if d.kind is BoxKind.RECUS and d.owner in relayed
    )
    if not orders:
        return plan
    kept = tuple(
        d for d in plan.destinations if not (d.kind is BoxKind.RECUS and d.owner in relayed)
    )
    return replace(plan, destinations=kept, records=(*plan.records, *orders))


class Outcome(enum.Enum):
    """What one attempt at the endpoint came to."""

    DELIVERED = "delivered"  # 250 to the end of DATA
    TEMPORARY = "temporary"  # down, unreachable, TLS failure, a 4xx: try again
    PERMANENT = "permanent"  # a 5xx: the court system will not take it


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    detail: str = ""  # the endpoint's reply or the failure, for the log and the receipt


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a queued message after an attempt: exactly one is set."""

    sent: bool = False
    retry_at: datetime | None = None
    give_up: str | None = None  # the non-delivery's reason, in the sender's words


@dataclass(frozen=True, slots=True)
class RetryRule:
    """Exponential backoff: ``first`` seconds after the first failure, then
    ``factor`` times longer each time, never more than ``ceiling``; no attempt
    after ``give_up_after`` seconds in the queue (the last one falls on it)."""

    first: float = 60.0
    factor: float = 2.0
    ceiling: float = 3600.0
    give_up_after: float = 172800.0

    def __post_init__(self) -> None:
        if self.first <= 0 or self.factor < 1 or self.ceiling < self.first:
            raise ValueError("backoff: first > 0, factor >= 1, ceiling >= first")
        if self.give_up_after <= 0:
            raise ValueError("backoff: give_up_after > 0")

    def delay(self, failures: int) -> timedelta:
        """The wait after the ``failures``-th failed attempt (1 for the first)."""
        n = max(failures, 1) - 1
        # Past the ceiling the power is not computed (it would overflow).
        seconds = self.first
        for _ in range(n):
            seconds *= self.factor
            if seconds >= self.ceiling:
                return timedelta(seconds=self.ceiling)
        return timedelta(seconds=min(seconds, self.ceiling))

    def decide(self, attempt: Attempt, failures: int, queued: datetime, now: datetime) -> Decision:
        """After an attempt: sent, again at some instant, or given up (why).

        ``failures`` counts this attempt if it failed. A permanent refusal
        is final at once; a temporary one is retried until the deadline.
        """
        if attempt.outcome is Outcome.DELIVERED:
            return Decision(sent=True)
        if attempt.outcome is Outcome.PERMANENT:
            return Decision(give_up=f"Refusé par le système de la juridiction : {attempt.detail}")
        deadline = queued + timedelta(seconds=self.give_up_after)
        if now >= deadline:
            return Decision(
                give_up=(
                    f"Non remis après {failures} tentative{'s' if failures > 1 else ''}"
                    f" en {_duration(now - queued)} ; dernière erreur : {attempt.detail}"
                )
            )
        return Decision(retry_at=min(now + self.delay(failures), deadline))


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


@dataclass(frozen=True, slots=True)
class RelayItem:
    """A queued message for one court system, as the relay claimed it."""

    id: int
    message: int  # the filed message's row id (its deposit receipt is about it)
    blob: str  # sha256 of the stored bytes (held by the queue until done)
    recipient: str
    sender: str
    message_id: str | None  # its Message-ID header: how a redelivery is recognised
    failures: int  # failed attempts so far
    queued: datetime


class RelayQueue(Protocol):
    """The durable queue (storage); every change is committed when it returns."""

    async def resume(self) -> int:
        """Release the leases this node held before it restarted (a crash while
        sending): those rows are due again now, not when the lease ends."""
        ...

    async def claim(self, limit: int) -> Sequence[RelayItem]:
        """Up to ``limit`` items due now, leased to this node: another node
        skips them until the lease ends (a crashed node's are taken again)."""
        ...

    async def read(self, item: RelayItem) -> bytes: ...

    async def delivered(self, item: RelayItem) -> None:
        """The endpoint said 250: never sent again."""
        ...

    async def retry(self, item: RelayItem, at: datetime, error: str) -> None: ...

    async def give_up(self, item: RelayItem, reason: str) -> None:
        """Never sent again; the sender gets a non-delivery receipt, in the same transaction."""
        ...

    async def backlog(self) -> tuple[int, datetime | None]:
        """How many items wait to be sent (every node's), and since when the oldest."""
        ...
