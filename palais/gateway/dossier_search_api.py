"""``GET /api/dossiers``: a lawyer finds the dossier a constitution is for.

By number (``numero=2025-0000138``), or by party names: ``type`` (CPH,
TPROX, TJ) and ``juridiction`` (its code) mandatory, with ``demandeur``
and/or ``defendeur``. The answer (JSON) lists, for each dossier found,
only its number, juridiction, service, status, demandeur and défendeur.
Lawyers and their collaborateurs only (401 without a certificate, 403 for
another role); a wrong query is a 400 naming every field at fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from palais.gateway.https import Caller, HttpRequest, Response, Route
from palais.gateway.json_api import answer
from palais.mailbox.dossier_search import DossierCard, DossierQuery, dossier_query
from palais.mailbox.errors import InvalidMessage
from palais.mailbox.identity import Role
from palais.mailbox.juridictions import JuridictionDirectory

PATH = b"/api/dossiers"
_PARAMS = ("numero", "type", "juridiction", "demandeur", "defendeur")
_LAWYERS = (Role.AVOCAT, Role.COLLABORATEUR)

Search = Callable[[DossierQuery], Awaitable[list[DossierCard]]]


def dossier_search_route(juridictions: JuridictionDirectory, search: Search) -> Route:
    async def serve(request: HttpRequest, caller: Caller) -> Response:
        who = await caller()
        if isinstance(who, Response):
            return who
        if who.role not in _LAWYERS:
            return answer(403, {"error": "réservé aux avocats"}, who)
        try:
            params = {
                name: request.args[name.encode()][0].decode("utf-8")
                for name in _PARAMS
                if request.args.get(name.encode())
            }
        except UnicodeDecodeError:
            return answer(400, {"error": "paramètres non UTF-8"}, who)
        try:
            query = dossier_query(params, juridictions)
        except InvalidMessage as error:
            return answer(400, {"error": error.text, "details": list(error.details)}, who)
        found = await search(query)
        return answer(200, {"dossiers": [card.as_json() for card in found]}, who)

    return Route(serve)
