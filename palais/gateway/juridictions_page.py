"""``GET /api/juridictions?ville=...``: the juridictions of a city, for a card holder.

A lawyer's form (or ``palais client juridictions``) looks up where to file:
at least three letters of the city (``ville``), optionally the type
(``type=CPH|TPROX|TJ``); or one juridiction by its code (``code``, as a
saisine or a constitution names it). The answer is JSON. Only a client with a trusted
certificate is answered (401 without one, 403 refused).
"""

from __future__ import annotations

import json

from palais.gateway.https import Caller, HttpRequest, Response, Route
from palais.mailbox.identity import Identity
from palais.mailbox.juridictions import JuridictionDirectory, TooShort
from palais.mailbox.saisine import JuridictionType

PATH = b"/api/juridictions"
_JSON = b"application/json"


def _json(status: int, value: object, identity: Identity | None = None) -> Response:
    body = json.dumps(value, ensure_ascii=False).encode() + b"\n"
    return Response(status, _JSON + b"; charset=utf-8", body, identity=identity)


def _argument(request: HttpRequest, name: bytes) -> str | None:
    """The query argument's text; None when absent. UnicodeDecodeError if not UTF-8."""
    values = request.args.get(name)
    return values[0].decode("utf-8") if values else None


def juridictions_route(directory: JuridictionDirectory) -> Route:
    async def serve(request: HttpRequest, caller: Caller) -> Response:
        who = await caller()
        if isinstance(who, Response):
            return who
        try:
            city = _argument(request, b"ville")
            kind = _argument(request, b"type")
            code = _argument(request, b"code")
        except UnicodeDecodeError:
            return _json(400, {"error": "paramètres non UTF-8"}, who)
        if code is not None:
            one = directory.get(code.upper())
            return _json(200, {"juridictions": [one.as_json()] if one else []}, who)
        if city is None:
            return _json(400, {"error": "paramètre ville manquant"}, who)
        wanted: JuridictionType | None = None
        if kind:
            try:
                wanted = JuridictionType(kind.upper())
            except ValueError:
                return _json(400, {"error": "type : CPH, TPROX ou TJ"}, who)
        try:
            found = directory.search(city, wanted)
        except TooShort as e:
            return _json(400, {"error": e.text}, who)
        return _json(200, {"juridictions": [j.as_json() for j in found]}, who)

    return Route(serve)
