from __future__ import annotations

import pytest

from palais.gateway.imap import mutf7


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Envoyés", "Envoy&AOk-s"),
        ("Supprimés", "Supprim&AOk-s"),
        ("Accusés de réception", "Accus&AOk-s de r&AOk-ception"),
        ("Dossiers/2025-0000138/Reçus", "Dossiers/2025-0000138/Re&AOc-us"),
        ("A&B", "A&-B"),
        ("日本語", "&ZeVnLIqe-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀", "&2D3eAA-"),
    ],
)
def test_round_trip(name: str, wire: str) -> None:
    assert mutf7.encode(name) == wire
    assert mutf7.decode(wire) == name


@pytest.mark.parametrize(
    "bad",
    ["&AOk", "&AOk=-", "&Jjo!-", "é", "&AGE-", "&AOk-&AOk-", "&/w-"],
)
def test_malformed_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        mutf7.decode(bad)
