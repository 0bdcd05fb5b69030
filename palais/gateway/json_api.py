"""What the JSON endpoints of the HTTPS listener share: their answers, their
errors, and reading a request's JSON object within a size."""

from __future__ import annotations

import json
from typing import Any

from palais.gateway.https import HttpRequest, Response
from palais.mailbox.identity import Identity

__all__ = ["BadRequest", "answer", "error", "json_object"]

JSON = b"application/json; charset=utf-8"


class BadRequest(ValueError):
    """A body that is not what the endpoint asks for (400, the text says why)."""


def answer(status: int, document: object, who: Identity | None = None) -> Response:
    body = json.dumps(document, ensure_ascii=False).encode() + b"\n"
    return Response(status, JSON, body, identity=who)


def error(status: int, text: str, who: Identity | None = None) -> Response:
    return answer(status, {"error": text}, who)


def json_object(request: HttpRequest, max_body: int, shape: str) -> dict[str, Any]:
    """The request's body, a JSON object of at most ``max_body`` bytes;
    ``shape`` shows the caller what is expected when it is not an object."""
    raw = request.content.read(max_body + 1) if request.content is not None else b""
    if len(raw) > max_body:
        raise BadRequest(f"the body is over {max_body // 1024} KiB")
    try:
        body: Any = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object: {shape}")
    return body
