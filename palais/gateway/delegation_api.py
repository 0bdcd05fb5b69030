"""``/api/delegations``: a lawyer grants and revokes their own delegations with their card.

JSON in and out; the caller is the identity their client certificate
proves, and acts only on their own delegations (the lawyer is always the
caller: there is no field naming another):

- ``GET /api/delegations``: ``{"granted": [...], "held": [...]}``, what the
  caller granted and what they hold from others;
- ``POST /api/delegations`` with ``{"to": ADDRESS, "rights": "read"|"write",
  "dossiers": [NUMBER, ...]}`` (no dossiers: all of them): 201 and what the
  caller has granted to that delegate afterwards;
- ``DELETE /api/delegations/ADDRESS`` (``?dossier=NUMBER``, repeatable, for
  some dossiers only): 200 and what was revoked.

A refusal is 4xx with ``{"error": reason}``: 400 for a body that is not what
is asked, 403 for a caller who is not a lawyer, 422 for what the rules
refuse (an unknown account or dossier, a delegation to oneself...). The
rules are the domain's (``palais.mailbox.delegation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import unquote

from palais.gateway.https import Caller, HttpRequest, Response, Route
from palais.gateway.json_api import BadRequest, answer, error, json_object
from palais.mailbox.delegation import Delegation, DelegationRefused, Revocation, Right
from palais.mailbox.identity import Identity, Role

__all__ = ["PREFIX", "DelegationDesk", "delegations_route"]

PREFIX = b"/api/delegations"
_MAX_BODY = 64 * 1024


class DelegationDesk(Protocol):
    async def granted_by(self, lawyer: Identity) -> list[Delegation]: ...

    async def held_by(self, delegate: str) -> tuple[Delegation, ...]: ...

    async def grant(
        self, lawyer: Identity, delegate: str, right: Right, dossiers: Sequence[str]
    ) -> list[Delegation]: ...

    async def revoke(
        self, lawyer: Identity, delegate: str, dossiers: Sequence[str]
    ) -> Revocation: ...


def _grant_request(request: HttpRequest) -> tuple[str, Right, list[str]]:
    """(delegate, right, dossiers) from the POST body; BadRequest naming what is wrong."""
    body = json_object(request, _MAX_BODY, '{"to": ADDRESS, "rights": ...}')
    unknown = sorted(set(body) - {"to", "rights", "dossiers"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    to = body.get("to")
    if not isinstance(to, str) or not to.strip():
        raise BadRequest('"to" must be the delegate\'s address')
    rights = body.get("rights", Right.READ.value)
    if rights not in {r.value for r in Right}:
        raise BadRequest('"rights" must be "read" or "write"')
    dossiers = body.get("dossiers", [])
    if not isinstance(dossiers, list) or not all(isinstance(d, str) for d in dossiers):
        raise BadRequest('"dossiers" must be a list of dossier numbers')
    return to.strip(), Right(rights), [d.strip() for d in dossiers]


def _dossier_args(request: HttpRequest) -> list[str]:
    values = (request.args or {}).get(b"dossier", [])
    return [v.decode("utf-8", "replace").strip() for v in values]


def delegations_route(desk: DelegationDesk) -> Route:
    """The route under ``PREFIX``: GET, POST and DELETE by the caller, for themself."""

    async def serve(request: HttpRequest, caller: Caller) -> Response:
        who = await caller()
        if isinstance(who, Response):
            return who
        rest = request.path[len(PREFIX) :]
        method = request.method
        if method in (b"GET", b"HEAD"):
            if rest not in (b"", b"/"):
                return error(404, "not found", who)
            granted = await desk.granted_by(who) if who.role is Role.AVOCAT else []
            held = await desk.held_by(who.address)
            return answer(
                200,
                {
                    "granted": [d.as_json() for d in granted],
                    "held": [d.as_json() for d in held],
                },
                who,
            )
        if who.role is not Role.AVOCAT:
            return error(403, "only a lawyer (avocat) grants or revokes delegations", who)
        try:
            if method == b"POST":
                if rest not in (b"", b"/"):
                    return error(404, "not found", who)
                delegate, right, dossiers = _grant_request(request)
                done = await desk.grant(who, delegate, right, dossiers)
                return answer(201, {"granted": [d.as_json() for d in done]}, who)
            # DELETE /api/delegations/<delegate>
            delegate = unquote(rest.lstrip(b"/").decode("utf-8", "replace")).strip()
            if not delegate or "/" in delegate:
                return error(404, "say whose delegation: DELETE /api/delegations/ADDRESS", who)
            revoked = await desk.revoke(who, delegate, _dossier_args(request))
            return answer(200, {"revoked": [d.as_json() for d in revoked.revoked]}, who)
        except BadRequest as bad:
            return error(400, str(bad), who)
        except DelegationRefused as refused:
            return error(422, refused.text, who)

    return Route(serve, methods=(b"GET", b"HEAD", b"POST", b"DELETE"), prefix=True)
