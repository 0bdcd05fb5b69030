"""The [imap] cost limits of palais.toml reach a real `palais serve`, and its /metrics."""

from __future__ import annotations

import imaplib
import ssl
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.instance import Instance, create_instance


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("imap-limits") / "instance"
    inst = create_instance(
        root,
        extra_config=(
            "[imap]\n"
            "max_search_keys = 3\n"
            "max_search_cost = 2000\n"
            "max_keywords = 2\n"
            "max_keyword_length = 10\n"
        ),
    )
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()


def _imap(inst: Instance, who: str) -> imaplib.IMAP4_SSL:
    conn = imaplib.IMAP4_SSL("localhost", inst.port("imaps"), ssl_context=inst.client_context(who))
    conn.authenticate("EXTERNAL", lambda _: b"")
    return conn


def _metrics(inst: Instance) -> str:
    ctx = inst.client_context("admin1")
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{inst.port('https')}/metrics"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as reply:
        return str(reply.read().decode("utf-8"))


def test_the_configured_limits_apply(capped: Instance) -> None:
    conn = _imap(capped, "avocat1")
    try:
        assert conn.select("INBOX")[0] == "OK"
        assert conn.search(None, "SEEN", "UNSEEN", "ALL")[0] == "OK"
        status, data = conn.search(None, "SEEN", "UNSEEN", "ALL", "FLAGGED")
        assert status == "NO" and data[0].startswith(b"[LIMIT] Too many search keys (at most 3)")
        message = b"From: x@y.test\r\nSubject: brouillon\r\n\r\ncorps\r\n"
        status, data = conn.append("Brouillons", "($a $b $c)", None, message)
        assert status == "NO" and b"[LIMIT] Too many keywords" in data[0]
        status, data = conn.append("Brouillons", "($abcdefghijk)", None, message)
        assert status == "NO" and b"[LIMIT] Keyword too long (at most 10" in data[0]
        assert conn.append("Brouillons", "($a $b)", None, message)[0] == "OK"
    finally:
        conn.logout()
    text = _metrics(capped)
    assert 'palais_limit_hits_total{limit="max_search_keys",listener="imap"} 1.0' in text
    assert 'palais_limit_hits_total{limit="max_keywords",listener="imap"} 1.0' in text
    assert 'palais_imap_command_seconds_count{command="SEARCH"} 2.0' in text
