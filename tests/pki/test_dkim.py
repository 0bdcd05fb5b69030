"""DKIM: what leaves the gateway verifies with dkimpy's own verifier, by each
algorithm alone, against the records the gateway tells the operator to publish.

Keys are generated per test under tmp_path.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from palais.pki.dkim import (
    DNS_RECORDS_FILE,
    DkimKeys,
    generate_dkim_keys,
    sign_outgoing,
    verify_incoming,
)

DOMAIN = "palais.test"

MESSAGE = (
    b"From: Greffe du TJ de Paris <greffe@palais.test>\r\n"
    b"To: Portalis <portalis@tj-paris.justice.test>\r\n"
    b"Subject: =?utf-8?q?Accus=C3=A9_de_r=C3=A9ception?=\r\n"
    b"Date: Mon, 30 Nov 2026 14:00:00 +0100\r\n"
    b"Message-ID: <20261130.1@palais.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Dossier RG 24/01234.\r\n"
)


@pytest.fixture
def keys(tmp_path: Path) -> DkimKeys:
    return generate_dkim_keys(tmp_path / "dkim", DOMAIN, "2026a")


def _published(directory: Path) -> dict[bytes, bytes]:
    """The records of dkim-dns.txt as a resolver would return them: the
    quoted strings of each TXT record joined."""
    records: dict[bytes, bytes] = {}
    for line in (directory / DNS_RECORDS_FILE).read_text().splitlines():
        if not line or line.startswith(";"):
            continue
        match = re.fullmatch(r"(\S+)\s+IN\s+TXT\s+(.+)", line)
        assert match, line
        strings = re.findall(r'"([^"]*)"', match.group(2))
        assert all(len(s) <= 255 for s in strings)  # a TXT string's limit
        records[match.group(1).encode()] = "".join(strings).encode()
    return records


def _dnsfunc(records: dict[bytes, bytes]) -> Callable[..., bytes]:
    """dkimpy's dnsfunc: called with the name and a timeout keyword."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name, b"")

    return lookup


def _dkimpy_verifies(message: bytes, records: dict[bytes, bytes], index: int) -> bool:
    """dkimpy's verdict on the index-th signature (it raises on some failures)."""
    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=_dnsfunc(records)))
    except dkim.DKIMException:
        return False


def _signatures(message: bytes) -> list[bytes]:
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    unfolded = re.sub(rb"\r?\n[ \t]", b" ", head)
    return [line for line in re.split(rb"\r?\n", unfolded) if line.startswith(b"DKIM-Signature:")]


def _without_signature(message: bytes, index: int) -> bytes:
    """``message`` with its index-th DKIM-Signature field removed (folded lines and all)."""
    fields = re.split(rb"(?m)^(?=\S)", message)  # each field starts at column 0
    dkim_fields = [i for i, f in enumerate(fields) if f.startswith(b"DKIM-Signature:")]
    del fields[dkim_fields[index]]
    return b"".join(fields)


# -- keys and records -----------------------------------------------------------


def test_keys_are_owner_only_and_the_records_say_which_algorithm(
    keys: DkimKeys, tmp_path: Path
) -> None:
    directory = tmp_path / "dkim"
    key_files = sorted(directory.glob("*.key.pem"))
    assert [p.name for p in key_files] == [
        "dkim-2026a-ed25519.key.pem",
        "dkim-2026a-rsa.key.pem",
    ]
    for path in key_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = _published(directory)
    assert set(records) == {
        b"2026a-ed25519._domainkey.palais.test.",
        b"2026a-rsa._domainkey.palais.test.",
    }
    assert records[b"2026a-ed25519._domainkey.palais.test."].startswith(b"v=DKIM1; k=ed25519; p=")
    assert records[b"2026a-rsa._domainkey.palais.test."].startswith(b"v=DKIM1; k=rsa; p=")
    assert keys.rsa_key.key_size == 2048


def test_the_keys_load_back_from_their_files(keys: DkimKeys, tmp_path: Path) -> None:
    loaded = DkimKeys.load(tmp_path / "dkim", DOMAIN, "2026a")
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert loaded.ed25519_key.public_key().public_bytes(*raw) == (
        keys.ed25519_key.public_key().public_bytes(*raw)
    )
    assert loaded.rsa_key.public_key().public_numbers() == (
        keys.rsa_key.public_key().public_numbers()
    )
    assert (loaded.ed25519_selector, loaded.rsa_selector) == ("2026a-ed25519", "2026a-rsa")
    assert loaded.dns_records() == keys.dns_records()


def test_existing_keys_are_never_replaced(keys: DkimKeys, tmp_path: Path) -> None:
    before = (tmp_path / "dkim" / "dkim-2026a-rsa.key.pem").read_bytes()
    with pytest.raises(FileExistsError):
        generate_dkim_keys(tmp_path / "dkim", DOMAIN, "2026a")
    assert (tmp_path / "dkim" / "dkim-2026a-rsa.key.pem").read_bytes() == before


@pytest.mark.parametrize("prefix", ["", "a b", "x._domainkey", "é"])
def test_a_selector_prefix_is_a_dns_label(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError):
        generate_dkim_keys(tmp_path, DOMAIN, prefix)


# -- signing ----------------------------------------------------------------------


def test_two_signatures_ed25519_first_each_valid_on_its_own(keys: DkimKeys, tmp_path: Path) -> None:
    records = _published(tmp_path / "dkim")
    signed = sign_outgoing(MESSAGE, keys)
    assert signed.endswith(MESSAGE)
    first, second = _signatures(signed)
    assert b"a=ed25519-sha256" in first and b"s=2026a-ed25519" in first
    assert b"a=rsa-sha256" in second and b"s=2026a-rsa" in second
    for field in (first, second):
        assert b"c=relaxed/relaxed" in field and b"d=palais.test" in field
        tags = re.search(rb"h=([^;]+);", field)
        assert tags is not None
        signed_names = {t.strip() for t in tags.group(1).split(b":")}
        assert signed_names == {
            b"from",
            b"to",
            b"cc",
            b"subject",
            b"date",
            b"message-id",
            b"mime-version",
            b"content-type",
        }

    assert _dkimpy_verifies(signed, records, 0)
    assert _dkimpy_verifies(signed, records, 1)
    # Each alone: the other signature removed, or its key not published.
    assert dkim.verify(_without_signature(signed, 1), dnsfunc=_dnsfunc(records))
    assert dkim.verify(_without_signature(signed, 0), dnsfunc=_dnsfunc(records))
    ed_only = {k: v for k, v in records.items() if b"ed25519" in k}
    assert _dkimpy_verifies(signed, ed_only, 0)
    assert not _dkimpy_verifies(signed, ed_only, 1)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (lambda m: m.replace(b"RG 24/01234", b"RG 24/01235"), "body"),
        (lambda m: m + b"Post-scriptum.\r\n", "appended body line"),
        (lambda m: m.replace(b"Subject: =?utf-8?q?Accus", b"Subject: =?utf-8?q?Xccus"), "subject"),
        (lambda m: m.replace(b"From: Greffe", b"From: Faux greffe"), "from"),
        (lambda m: m.replace(b"\r\n\r\n", b"\r\nCc: intrus@ailleurs.test\r\n\r\n", 1), "added cc"),
        (lambda m: m.replace(b"From: Greffe", b"Subject: Autre\r\nFrom: Greffe", 1), "2nd subject"),
    ],
)
def test_a_changed_message_fails_both_signatures(
    keys: DkimKeys, tmp_path: Path, change: Callable[[bytes], bytes], what: str
) -> None:
    records = _published(tmp_path / "dkim")
    signed = sign_outgoing(MESSAGE, keys)
    changed = change(signed)
    assert changed != signed, what
    assert not _dkimpy_verifies(changed, records, 0)
    assert not _dkimpy_verifies(changed, records, 1)
    assert not verify_incoming(changed, _dnsfunc(records))


def test_relaxed_canonicalisation_survives_refolding_and_trailing_spaces(
    keys: DkimKeys, tmp_path: Path
) -> None:
    records = _published(tmp_path / "dkim")
    signed = sign_outgoing(MESSAGE, keys)
    relayed = signed.replace(b"To: Portalis", b"To:   Portalis").replace(
        b"RG 24/01234.\r\n", b"RG 24/01234.   \r\n"
    )
    assert _dkimpy_verifies(relayed, records, 0)
    assert _dkimpy_verifies(relayed, records, 1)


def test_lf_line_endings_and_an_8bit_utf8_body(keys: DkimKeys, tmp_path: Path) -> None:
    records = _published(tmp_path / "dkim")
    body = "Décision du greffe : pièce n° 3 reçue — « conforme ».\n".encode()
    message = MESSAGE.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0] + b"\n\n" + body
    signed = sign_outgoing(message, keys)
    header = signed[: len(signed) - len(message)]
    assert b"\r" not in header  # the new fields use the message's line endings
    assert _dkimpy_verifies(signed, records, 0)
    assert _dkimpy_verifies(signed, records, 1)
    assert verify_incoming(signed, _dnsfunc(records))
    assert not verify_incoming(signed.replace("reçue".encode(), b"recue"), _dnsfunc(records))


def test_crlf_message_with_8bit_body(keys: DkimKeys, tmp_path: Path) -> None:
    records = _published(tmp_path / "dkim")
    message = MESSAGE + "Pièces : conclusions, bordereau.\r\n".encode()
    signed = sign_outgoing(message, keys)
    header = signed[: len(signed) - len(message)]
    assert header.count(b"\r\n") == header.count(b"\n")
    assert _dkimpy_verifies(signed, records, 0)
    assert _dkimpy_verifies(signed, records, 1)


# -- verifying court systems' mail ----------------------------------------------


def test_verify_incoming_accepts_a_signature_of_the_authors_domain(
    tmp_path: Path,
) -> None:
    court = generate_dkim_keys(tmp_path / "court", "justice.test", "portalis1")
    records = _published(tmp_path / "court")
    message = MESSAGE.replace(b"greffe@palais.test", b"portalis@tj-paris.justice.test")
    signed = sign_outgoing(message, court)
    assert verify_incoming(signed, _dnsfunc(records))  # d= a parent of the author's
    # With one algorithm's key withdrawn, the other still carries it.
    rsa_only = {k: v for k, v in records.items() if b"rsa" in k}
    assert verify_incoming(signed, _dnsfunc(rsa_only))
    assert not verify_incoming(signed, _dnsfunc({}))


def test_verify_incoming_refuses_what_proves_nothing_of_the_author(
    keys: DkimKeys, tmp_path: Path
) -> None:
    records = _published(tmp_path / "dkim")
    assert not verify_incoming(MESSAGE, _dnsfunc(records))  # unsigned
    stranger = MESSAGE.replace(b"greffe@palais.test", b"greffe@justice.test")
    assert not verify_incoming(sign_outgoing(stranger, keys), _dnsfunc(records))
    lookalike = MESSAGE.replace(b"greffe@palais.test", b"greffe@notpalais.test")
    assert not verify_incoming(sign_outgoing(lookalike, keys), _dnsfunc(records))
    two_authors = MESSAGE.replace(b"From: ", b"From: a@palais.test\r\nFrom: ", 1)
    assert not verify_incoming(sign_outgoing(two_authors, keys), _dnsfunc(records))


def test_verify_incoming_compares_an_idn_author_in_its_ascii_form(tmp_path: Path) -> None:
    court = generate_dkim_keys(tmp_path / "court", "xn--courdappel-k7a.test", "k1")
    records = _published(tmp_path / "court")
    # An SMTPUTF8 From in its U-label form; d= is the A-label of the same domain.
    message = MESSAGE.replace(b"greffe@palais.test", "greffe@courdappel\u00e9.test".encode())
    assert verify_incoming(sign_outgoing(message, court), _dnsfunc(records))


def test_verify_incoming_survives_a_malformed_signature(keys: DkimKeys, tmp_path: Path) -> None:
    records = _published(tmp_path / "dkim")
    signed = sign_outgoing(MESSAGE, keys)
    broken = b"DKIM-Signature: v=1; a=nonsense; b=\r\n" + signed
    assert verify_incoming(broken, _dnsfunc(records))  # the valid ones still count
