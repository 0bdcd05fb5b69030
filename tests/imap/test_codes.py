from __future__ import annotations

from palais.gateway.imap import codes


def test_response_codes_are_the_rfc_spellings() -> None:
    assert codes.TRYCREATE == b"TRYCREATE"
    assert codes.AUTHORIZATIONFAILED == b"AUTHORIZATIONFAILED"
    assert codes.SERVERBUG == b"SERVERBUG"
    assert codes.TOOBIG == b"TOOBIG"
    assert codes.BADCHARSET == b"BADCHARSET (UTF-8 US-ASCII)"
    assert codes.READ_ONLY == b"READ-ONLY"


def test_capabilities_before_and_after_login() -> None:
    before = set(codes.CAPABILITIES_BEFORE_AUTH)
    after = set(codes.CAPABILITIES_AFTER_AUTH)
    assert {b"IMAP4rev1", b"AUTH=EXTERNAL", b"SASL-IR", b"LITERAL+", b"ID", b"ENABLE"} <= before
    # LOGIN only selects the certificate's identity: it must stay offered.
    assert b"LOGINDISABLED" not in before
    assert not any(c.startswith(b"AUTH=") for c in after)
    for cap in (
        b"IDLE",
        b"UIDPLUS",
        b"MOVE",
        b"SPECIAL-USE",
        b"NAMESPACE",
        b"UNSELECT",
        b"CHILDREN",
        b"ESEARCH",
        b"CONDSTORE",
        b"UTF8=ACCEPT",
    ):
        assert cap in after
