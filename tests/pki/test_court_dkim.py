"""The court listener's DKIM check, on bytes: keys from the records a court
system publishes, refuse or flag, and the gateway's own verdict never forged."""

from __future__ import annotations

from pathlib import Path

import pytest

from palais.mailbox.errors import ErrorKind, NotAllowed
from palais.mailbox.identity import Identity, Role
from palais.pki.court_dkim import CourtDkim, DkimFailure, load_records, parse_records
from palais.pki.dkim import DNS_RECORDS_FILE, DkimKeys, generate_dkim_keys, sign_outgoing

DOMAIN = "cph-x.juridictions.palais.test"
COURT = Identity(
    7, f"portalis@{DOMAIN}", Role.COURT_SYSTEM, "Portalis", "c" * 64, f"portalis@{DOMAIN}"
)
MESSAGE = (
    f"From: <portalis@{DOMAIN}>\r\nTo: <d@x.test>\r\nSubject: [2025-0000138] Audience\r\n"
    f"Message-ID: <1@{DOMAIN}>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\n\r\n"
    "Audience fixee au 12 janvier.\r\n"
).encode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[DkimKeys, Path]:
    directory = tmp_path_factory.mktemp("court-dkim")
    return generate_dkim_keys(directory, DOMAIN, "portalis"), directory / DNS_RECORDS_FILE


def _check(records: Path, failure: DkimFailure) -> CourtDkim:
    return CourtDkim(load_records([records]), failure, "gw.palais.test")


def test_the_published_zone_lines_are_read_back_whole(keys: tuple[DkimKeys, Path]) -> None:
    signing, records = keys
    read = parse_records(records.read_text())
    # The RSA value, split in strings of 250 characters in the file, is joined.
    assert read == {name.rstrip("."): value for name, value in signing.dns_records().items()}


def test_a_line_that_is_no_record_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "court.txt"
    bad.write_text('; comment\nsel._domainkey.x.test. IN TXT "v=DKIM1; p=AA"\nnonsense here\n')
    with pytest.raises(ValueError, match=r"court\.txt:3: not a TXT record line"):
        load_records([bad])
    with pytest.raises(ValueError, match=r"missing\.txt"):
        load_records([tmp_path / "missing.txt"])


def test_a_valid_signature_passes_and_is_recorded(keys: tuple[DkimKeys, Path]) -> None:
    signing, records = keys
    stored = _check(records, DkimFailure.REFUSE).check(COURT, sign_outgoing(MESSAGE, signing))
    assert stored.startswith(
        f"Authentication-Results: gw.palais.test;\r\n\tdkim=pass header.d={DOMAIN}\r\n".encode()
    )


@pytest.mark.parametrize("signed", [True, False])
def test_refuse_turns_away_a_broken_or_missing_signature(
    keys: tuple[DkimKeys, Path], signed: bool
) -> None:
    signing, records = keys
    data = sign_outgoing(MESSAGE, signing) if signed else MESSAGE
    tampered = data.replace(b"12 janvier", b"13 janvier")
    with pytest.raises(NotAllowed) as refused:
        _check(records, DkimFailure.REFUSE).check(COURT, tampered)
    assert refused.value.kind is ErrorKind.NOT_ALLOWED and "DKIM" in refused.value.text


def test_a_key_nobody_published_fails(tmp_path: Path, keys: tuple[DkimKeys, Path]) -> None:
    _, records = keys
    stranger = generate_dkim_keys(tmp_path, DOMAIN, "portalis")  # same selector, other key
    with pytest.raises(NotAllowed):
        _check(records, DkimFailure.REFUSE).check(COURT, sign_outgoing(MESSAGE, stranger))


def test_flag_stores_the_failure_and_drops_a_forged_verdict(
    keys: tuple[DkimKeys, Path],
) -> None:
    signing, records = keys
    forged = (
        b"Authentication-Results: GW.palais.test; dkim=pass\r\n"
        b"Authentication-Results: other.example; dkim=pass\r\n"
    ) + sign_outgoing(MESSAGE, signing).replace(b"12 janvier", b"13 janvier")
    stored = _check(records, DkimFailure.FLAG).check(COURT, forged)
    assert stored.count(b"Authentication-Results:") == 2
    assert stored.startswith(b"Authentication-Results: gw.palais.test;\r\n\tdkim=fail")
    assert b"other.example; dkim=pass" in stored  # another host's verdict is its own
    assert (
        _check(records, DkimFailure.FLAG)
        .check(COURT, MESSAGE)
        .startswith(b"Authentication-Results: gw.palais.test;\r\n\tdkim=none")
    )


def test_off_checks_nothing(keys: tuple[DkimKeys, Path]) -> None:
    _, records = keys
    assert _check(records, DkimFailure.OFF).check(COURT, MESSAGE) is MESSAGE


def test_a_court_system_s_own_setting_replaces_the_default(keys: tuple[DkimKeys, Path]) -> None:
    _, records = keys
    other = Identity(
        8, f"wincitgi@{DOMAIN}", Role.COURT_SYSTEM, "W", "b" * 64, f"wincitgi@{DOMAIN}"
    )
    # Refused by default, one system being connected flagged (its address in any case).
    check = CourtDkim(
        load_records([records]),
        DkimFailure.REFUSE,
        "gw.palais.test",
        {COURT.address.upper(): DkimFailure.FLAG},
    ).check
    assert check(COURT, MESSAGE).startswith(
        b"Authentication-Results: gw.palais.test;\r\n\tdkim=none"
    )
    with pytest.raises(NotAllowed):
        check(other, MESSAGE)
    # Unchecked by default, one system held to its signature.
    strict = CourtDkim(
        load_records([records]),
        DkimFailure.OFF,
        "gw.palais.test",
        {COURT.address: DkimFailure.REFUSE},
    ).check
    assert strict(other, MESSAGE) is MESSAGE
    with pytest.raises(NotAllowed):
        strict(COURT, MESSAGE)
