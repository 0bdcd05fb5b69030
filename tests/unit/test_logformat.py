"""JSON-lines log records: one valid JSON object per line, extras kept."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from typing import Any

import pytest

from palais.cli import _setup_logging
from palais.logformat import JsonLinesFormatter, log_uncaught_exceptions

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def logged() -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own (outside the logging tree, so nothing propagates) writing JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter())
    log = logging.Logger("palais.tests.logformat", logging.DEBUG)
    log.addHandler(handler)
    return log, stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_core_fields_and_the_imap_extras(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logged
    log.info(
        "imap connection peer=%s outcome=%s",
        "127.0.0.1:5000",
        "logout",
        extra={
            "peer": "127.0.0.1:5000",
            "identity": "nadia.bernard@justice.palais.test",
            "fingerprint": None,
            "outcome": "logout",
            "commands": 4,
            "duration": 0.125,
        },
    )
    (entry,) = lines(stream)
    assert ISO_UTC.fullmatch(entry.pop("time"))
    assert entry == {
        "level": "INFO",
        "logger": "palais.tests.logformat",
        "message": "imap connection peer=127.0.0.1:5000 outcome=logout",
        "peer": "127.0.0.1:5000",
        "identity": "nadia.bernard@justice.palais.test",
        "fingerprint": None,
        "outcome": "logout",
        "commands": 4,
        "duration": 0.125,
    }


def test_time_is_utc(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logged
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "x", (), None)
    record.created = 0.5  # the epoch, whatever the machine's time zone
    log.handle(record)
    assert lines(stream)[0]["time"] == "1970-01-01T00:00:00.500Z"


def test_exception_text_and_multiline_messages_stay_on_one_line(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logged
    try:
        raise RuntimeError("secret-internal-state")
    except RuntimeError:
        log.exception("HTTPS GET /metrics failed\nsecond line\u2028third")
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().isascii()
    (entry,) = lines(stream)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "HTTPS GET /metrics failed\nsecond line\u2028third"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("RuntimeError: secret-internal-state")


def test_values_json_cannot_hold_are_written_as_text(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logged

    class Peer:
        def __str__(self) -> str:
            return "peer-object"

    log.warning(
        "odd values",
        extra={
            "ratio": float("nan"),
            "limit": float("inf"),
            "peer": Peer(),
            "names": ("a", 1, None),
            "nested": {1: [float("-inf")]},
            "time": "caller's own",
            "level": 3,
        },
    )
    (entry,) = lines(stream)  # json.loads would accept NaN; the text must not contain it
    assert "NaN" not in stream.getvalue() and "Infinity" not in stream.getvalue()
    assert entry["ratio"] == "nan" and entry["limit"] == "inf"
    assert entry["peer"] == "peer-object"
    assert entry["names"] == ["a", 1, None]
    assert entry["nested"] == {"1": ["-inf"]}
    assert entry["level"] == "WARNING" and entry["extra_level"] == 3
    assert entry["extra_time"] == "caller's own" and ISO_UTC.fullmatch(entry["time"])


def test_bad_format_arguments_still_give_a_line(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logged
    log.info("%d commands", "not a number")
    (entry,) = lines(stream)
    assert "%d commands" in entry["message"] and "not a number" in entry["message"]


def test_stack_info(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logged
    log.info("where", stack_info=True)
    (entry,) = lines(stream)
    assert entry["stack"].startswith("Stack (most recent call last):")
    assert "test_stack_info" in entry["stack"]


def test_uncaught_exceptions_are_logged(
    logged: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, stream = logged
    monkeypatch.setattr("sys.excepthook", None)
    monkeypatch.setattr("threading.excepthook", None)
    log_uncaught_exceptions(log)
    import sys

    try:
        raise ValueError("main-thread")
    except ValueError as error:
        sys.excepthook(ValueError, error, error.__traceback__)

    def boom() -> None:
        raise KeyError("in-thread")

    thread = threading.Thread(target=boom, name="palais-test-thread")
    thread.start()
    thread.join()
    main, other = lines(stream)
    assert main["level"] == "CRITICAL" and main["exception"].endswith("ValueError: main-thread")
    assert other["message"] == "uncaught exception in thread palais-test-thread"
    assert other["exception"].endswith("KeyError: 'in-thread'")


def test_setup_logging_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr("sys.excepthook", None)
    monkeypatch.setattr("threading.excepthook", None)
    try:
        _setup_logging("DEBUG", "json")
        logging.getLogger("palais.tests").debug("hello %s", "json", extra={"outcome": "ok"})
    finally:
        logging.captureWarnings(False)
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert entry["message"] == "hello json" and entry["outcome"] == "ok"
    assert entry["level"] == "DEBUG" and entry["logger"] == "palais.tests"
