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

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from palais.gateway.https import Caller, HttpRequest, Response, Route
from palais.mailbox.alerts import (
    AlertMode,
    AlertRefused,
    AlertSetting,
    check_address,
    check_mode,
)
from palais.mailbox.identity import Identity, Role

__all__ = ["PATH", "AlertDesk", "alerts_route"]

PATH = b"/api/alerts"
_JSON = b"application/json"
_MAX_BODY = 16 * 1024


class AlertDesk(Protocol):
    async def setting(self, person: str) -> AlertSetting | None: ...

    async def put(self, setting: AlertSetting) -> AlertSetting: ...

    async def remove(self, person: str) -> bool: ...


def _answer(status: int, document: object, who: Identity | None = None) -> Response:
    body = json.dumps(document, ensure_ascii=False).encode() + b"\n"
    return Response(status, _JSON, body, identity=who)


def _error(status: int, text: str, who: Identity | None = None) -> Response:
    return _answer(status, {"error": text}, who)


class _BadRequest(ValueError):
    pass


def _body(request: HttpRequest) -> dict[str, Any]:
    raw = request.content.read(_MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > _MAX_BODY:
        raise _BadRequest(f"the body is over {_MAX_BODY // 1024} KiB")
    try:
        body: Any = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest('the body must be a JSON object: {"address": ADDRESS, "mode": ...}')
    unknown = sorted(set(body) - {"address", "mode"})
    if unknown:
        raise _BadRequest(f"unknown field(s): {', '.join(unknown)}")
    if "address" not in body:
        raise _BadRequest('"address" is missing: where to send the notices')
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
            return _error(404, "not found", who)
        method = request.method
        if method in (b"GET", b"HEAD"):
            found = await desk.setting(who.address)
            return _answer(200, {"alert": None if found is None else found.as_json()}, who)
        if who.role is Role.COURT_SYSTEM:
            return _error(403, "alerts are for people, not court systems", who)
        if method == b"DELETE":
            return _answer(200, {"removed": await desk.remove(who.address)}, who)
        try:
            body = _body(request)
            address = check_address(body["address"], await own_domains())
            mode = check_mode(body.get("mode", AlertMode.IMMEDIATE.value))
        except _BadRequest as bad:
            return _error(400, str(bad), who)
        except AlertRefused as refused:
            return _error(422, refused.text, who)
        done = await desk.put(AlertSetting(who.address, who.mailbox_owner, address, mode, clock()))
        return _answer(200, {"alert": done.as_json()}, who)

    return Route(serve, methods=(b"GET", b"HEAD", b"PUT", b"DELETE"))
