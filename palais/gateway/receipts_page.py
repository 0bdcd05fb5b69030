"""``/accuses/<evidence id>.pdf``: the printable receipt, for whoever holds the receipt.

The PDF is made on demand (one page, signed in PAdES by the evidence key,
some 40 ms: in a worker thread), never at ingest. Only a mailbox that
holds the receipt gets it, identified by its card certificate; another
client learns nothing, not even whether the receipt exists (404 both ways).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from palais.gateway.https import Caller, HttpRequest, Response, Route
from palais.mailbox.identity import Identity

PREFIX = b"/accuses/"
_PATH = re.compile(rb"^/accuses/([0-9a-f-]{36})\.pdf$")
_PDF = b"application/pdf"
_JSON = b"application/json"

HeldEvidence = Callable[[Identity, str], Awaitable[str | None]]
MakePdf = Callable[[Mapping[str, Any]], bytes]


def _error(status: int, text: str, identity: Identity | None = None) -> Response:
    body = json.dumps({"error": text}).encode() + b"\n"
    return Response(status, _JSON, body, identity=identity)


def receipts_route(held: HeldEvidence, make_pdf: MakePdf) -> Route:
    """The route serving printable receipts: ``held(who, evidence id)`` gives the
    evidence if who's mailbox holds it; ``make_pdf`` signs its PDF."""

    async def serve(request: HttpRequest, caller: Caller) -> Response:
        who = await caller()
        if isinstance(who, Response):
            return who
        found = _PATH.match(request.path)
        if found is None:
            return _error(404, "not found", who)
        evidence_id = found.group(1).decode()
        evidence = await held(who, evidence_id)
        if evidence is None:
            return _error(404, "not found", who)
        pdf = await asyncio.to_thread(make_pdf, json.loads(evidence))
        disposition = f'attachment; filename="accuse-{evidence_id}.pdf"'.encode()
        return Response(200, _PDF, pdf, ((b"content-disposition", disposition),), who)

    return Route(serve, prefix=True)
