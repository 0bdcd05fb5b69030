"""Court systems' side of the gateway, wired from the settings: the DKIM
check of what they push (court listener) and the relay of what lawyers send
them (``[court_relay]``). Part of the composition root (``palais.app``)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from palais.config import Settings
from palais.gateway.relay import Endpoint, RelayWorker, client_context
from palais.mailbox.identity import Identity
from palais.mailbox.relay import RelayOrder, RetryRule
from palais.pki.court_dkim import CourtDkim, DkimFailure, load_records
from palais.pki.dkim import DkimKeys, generate_dkim_keys, sign_outgoing
from palais.storage import Storage
from palais.storage.relay_queue import SqlRelayQueue, write_relay_order

__all__ = [
    "CourtSystemsError",
    "arrival_check",
    "relay_keys",
    "relay_worker",
    "relayed_court_systems",
]

log = logging.getLogger("palais.relay")


class CourtSystemsError(OSError):
    """A [court_relay] or [court_dkim] setting that cannot be used; the message
    names it (an OSError: ``palais serve`` says it and does not start)."""


def arrival_check(settings: Settings) -> Callable[[Identity, bytes], bytes] | None:
    """The court listener's DKIM check, or None when ``[court_dkim] failure = "off"``
    and no court system has a setting of its own but "off".

    Raises CourtSystemsError for an unreadable or malformed records file.
    """
    failure = DkimFailure(settings.court_dkim.failure)
    systems = {a: DkimFailure(f) for a, f in settings.court_dkim.systems.items()}
    checked = [f for f in (failure, *systems.values()) if f is not DkimFailure.OFF]
    if not checked:
        return None
    try:
        records = load_records(settings.court_dkim.records)
    except ValueError as e:
        raise CourtSystemsError(f"[court_dkim] records: {e}") from None
    if not records:
        raise CourtSystemsError(
            f'[court_dkim] failure = "{checked[0]}" needs records: the court systems\' DKIM keys'
        )
    return CourtDkim(records, failure, settings.instance.hostname, systems).check


def relayed_court_systems(settings: Settings) -> frozenset[str]:
    """The court systems whose mail goes to their endpoint, not their INBOX."""
    return frozenset(a.strip().lower() for a in settings.court_relay.endpoints)


def relay_keys(settings: Settings) -> DkimKeys:
    """The gateway's DKIM keys, made at the first start (with dkim-dns.txt to publish)."""
    r = settings.court_relay
    domain = settings.instance.mail_domain
    try:
        return DkimKeys.load(r.dkim_keys, domain, r.dkim_selector)
    except FileNotFoundError:
        pass
    except ValueError as e:
        raise CourtSystemsError(f"[court_relay] dkim_keys: {e}") from None
    try:
        r.dkim_keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = generate_dkim_keys(r.dkim_keys, domain, r.dkim_selector)
    except (OSError, ValueError) as e:
        raise CourtSystemsError(f"[court_relay] dkim_keys {r.dkim_keys}: {e}") from None
    log.warning("new DKIM keys in %s: publish dkim-dns.txt there", r.dkim_keys)
    return keys


def relay_worker(settings: Settings, storage: Storage) -> RelayWorker | None:
    """The relay's worker (not started), or None without endpoints. Filing
    plans' relay orders are written whatever the configuration (a row
    queued before an endpoint left it waits for it, then gives up)."""
    storage.mail.add_record_writer(RelayOrder, write_relay_order)
    r = settings.court_relay
    if not r.endpoints:
        return None
    try:
        endpoints = {
            address.strip().lower(): Endpoint.parse(address, where)
            for address, where in r.endpoints.items()
        }
    except ValueError as e:
        raise CourtSystemsError(f"[court_relay] endpoints: {e}") from None
    for key in ("client_certificate", "client_key", "anchors"):
        path = getattr(r, key)
        if not path.is_file():
            raise CourtSystemsError(f"[court_relay] {key}: no such file {path}")
    try:
        context = client_context(str(r.client_certificate), str(r.client_key), str(r.anchors))
    except (OSError, ssl.SSLError) as e:
        raise CourtSystemsError(
            f"[court_relay] client_certificate, client_key or anchors unusable: {e}"
        ) from None
    try:
        rule = RetryRule(r.first_retry, r.backoff_factor, r.max_retry, r.give_up_after)
    except ValueError as e:
        raise CourtSystemsError(f"[court_relay] {e}") from None
    keys = relay_keys(settings)
    queue = SqlRelayQueue(storage.commits, storage.mail, lease=r.lease, node=settings.instance.node)
    return RelayWorker(
        queue,
        endpoints,
        context,
        sign=lambda data: sign_outgoing(data, keys),
        rule=rule,
        hostname=settings.instance.hostname,
        interval=r.poll_interval,
        timeout=r.timeout,
    )
