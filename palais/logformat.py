"""Log formats for ``[log] format``: the default text line, or JSON lines.

``json`` writes one JSON object per line, for a log shipper to read without
a parser of its own: ``time`` (ISO 8601, UTC, milliseconds), ``level``,
``logger``, ``message``, then every field the caller passed with
``extra=`` (the IMAP server's ``peer``, ``identity``, ``fingerprint``,
``outcome``, ``commands``, ``duration``), and ``exception`` / ``stack`` when
the record carries them. Exception text belongs in this log and nowhere
else: the front-ends answer clients with generic replies.

The output is ASCII (non-ASCII escaped) so that a line never breaks on a
newline, a Unicode line separator or a terminal's encoding, and it is always
valid JSON: values JSON cannot hold (objects, NaN, infinities) are written as
their text.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Final

__all__ = [
    "NODE_TEXT_FORMAT",
    "TEXT_FORMAT",
    "JsonLinesFormatter",
    "log_uncaught_exceptions",
    "name_node",
]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
# One node of several (``[instance] node``, or a worker of ``serve --workers``):
# which one wrote the line, for logs gathered in one place.
NODE_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s node=%(node)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else on a record came from extra=.
_STANDARD: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}
_CORE: Final = ("time", "level", "logger", "message", "exception", "stack")
_MAX_DEPTH: Final = 4

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, JsonValue] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            # A field named like a core one keeps its value under another name.
            entry[f"extra_{key}" if key in _CORE else key] = _jsonable(value, 0)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _utc(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        # A call whose arguments do not fit its format string still leaves a
        # line, rather than a "--- Logging error ---" traceback on stderr.
        return f"{record.msg!r} (unformattable arguments: {record.args!r})"


def _jsonable(value: object, depth: int) -> JsonValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, list | tuple | set | frozenset):
            return [_jsonable(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    return str(value)


def name_node(node: str) -> None:
    """Put ``node`` on every log record of this process (JSON: a ``node`` field)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "palais_node", None) is not None:
        previous = previous.palais_node  # type: ignore[attr-defined]

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.node = node
        return record

    factory.palais_node = previous  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def log_uncaught_exceptions(log: logging.Logger) -> None:
    """Send uncaught exceptions (main thread and others) to ``log``.

    Python prints them to stderr as bare tracebacks, which would break a
    JSON-lines stream.
    """

    def main_hook(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, tb)
            return
        log.critical("uncaught exception", exc_info=(kind, error, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        log.error(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
