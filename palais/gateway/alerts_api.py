"""``/api/alerts``: a person chooses, with their card, where and how they are alerted.

JSON in and out; the caller is the identity their client certificate
proves and acts only on their own setting:

- ``GET /api/alerts``: ``{"alert": {"address", "mode", "since"}}``, or
  ``{"alert": null}`` when they have none;
- ``PUT /api/alerts`` with ``{"address": ADDRESS, "mode": "immediate" |
  "digest"}`` (mode defaults to immediate): 200 and the setting;
- ``DELETE /api/alerts``: 200 and ``{"removed": true|false}``; notices not
  sent yet are dropped.

A refusal is 4xx with ``{"error": reason}``: 400 for a body that is not
what is asked, 403 for a court system (a machine has no one to alert), 422
for an address the rules refuse (``palais.mailbox.alerts.check_address``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from palais.gateway.https import Caller, HttpRequest, Response, Route
from palais.gateway.json_api import BadRequest, answer, error, json_object
from palais.mailbox.alerts import (
    AlertMode,
    AlertRefused,
    AlertSetting,
    check_address,
    check_mode,
)
from palais.mailbox.identity import Role

__all__ = ["PATH", "AlertDesk", "alerts_route"]

PATH = b"/api/alerts"
_MAX_BODY = 16 * 1024


class AlertDesk(Protocol):
    async def setting(self, person: str) -> AlertSetting | None: ...

    async def put(self, setting: AlertSetting) -> AlertSetting: ...

    async def remove(self, person: str) -> bool: ...


def _body(request: HttpRequest) -> dict[str, Any]:
    body = json_object(request, _MAX_BODY, '{"address": ADDRESS, "mode": ...}')
    unknown = sorted(set(body) - {"address", "mode"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    if "address" not in body:
        raise BadRequest('"address" is missing: where to send the notices')
    return body


def alerts_route(
    desk: AlertDesk,
    own_domains: Callable[[], Awaitable[frozenset[str]]],
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Route:
    """The route at ``PATH``: GET, PUT and DELETE of the caller's own setting.
    ``own_domains``: the gateway's mail domains, where notices may not go."""

    async def serve(request: HttpRequest, caller: Caller) -> Response:
        who = await caller()
        if isinstance(who, Response):
            return who
        if request.path != PATH:
            return error(404, "not found", who)
        method = request.method
        if method in (b"GET", b"HEAD"):
            found = await desk.setting(who.address)
            return answer(200, {"alert": None if found is None else found.as_json()}, who)
        if who.role is Role.COURT_SYSTEM:
            return error(403, "alerts are for people, not court systems", who)
        if method == b"DELETE":
            return answer(200, {"removed": await desk.remove(who.address)}, who)
        try:
            body = _body(request)
            address = check_address(body["address"], await own_domains())
            mode = check_mode(body.get("mode", AlertMode.IMMEDIATE.value))
        except BadRequest as bad:
            return error(400, str(bad), who)
        except AlertRefused as refused:
            return error(422, refused.text, who)
        done = await desk.put(AlertSetting(who.address, who.mailbox_owner, address, mode, clock()))
        return answer(200, {"alert": done.as_json()}, who)

    return Route(serve, methods=(b"GET", b"HEAD", b"PUT", b"DELETE"))
