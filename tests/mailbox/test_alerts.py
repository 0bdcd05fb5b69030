"""Alerts' rules: which arrivals are told, which addresses may hear, when, and the French text."""

from __future__ import annotations

import email
from dataclasses import replace
from datetime import UTC, datetime, time
from email.policy import default
from zoneinfo import ZoneInfo

import pytest

from palais.mailbox.alerts import (
    AlertMode,
    AlertRefused,
    Arrival,
    NoticeKind,
    PendingNotice,
    check_address,
    check_mode,
    compose,
    cutoff,
    digest_at,
    notice_kind,
    retry_delay,
)
from palais.mailbox.model import BoxKind

PARIS = ZoneInfo("Europe/Paris")
AT = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)  # 15:05 in Paris


def arrival(kind: BoxKind, dossier: str | None = "2025-0000138") -> Arrival:
    return Arrival("a@avocats.test", kind, dossier, 7, AT)


def test_a_new_message_in_recus_and_a_new_receipt_are_told() -> None:
    assert notice_kind(arrival(BoxKind.RECUS)) is NoticeKind.MESSAGE
    assert notice_kind(arrival(BoxKind.ACCUSES)) is NoticeKind.RECEIPT


@pytest.mark.parametrize("kind", [BoxKind.ENVOYES, BoxKind.BROUILLONS, BoxKind.SUPPRIMES])
def test_ones_own_boxes_are_not_told(kind: BoxKind) -> None:
    assert notice_kind(arrival(kind)) is None


@pytest.mark.parametrize(
    ("events", "told"),
    [
        ({"premiere-lecture"}, True),
        ({"acceptation-greffe"}, True),
        ({"rejet-greffe"}, True),
        ({"non-remise"}, True),
        ({"depot"}, False),
        ({"depot", "remise"}, False),
        ({"remise", "premiere-lecture"}, True),
        (set(), True),  # events unknown: told rather than lost
    ],
)
def test_receipts_are_told_when_they_bring_news(events: set[str], told: bool) -> None:
    found = notice_kind(replace(arrival(BoxKind.ACCUSES), events=frozenset(events)))
    assert found is (NoticeKind.RECEIPT if told else None)


def test_the_fiche_dossier_is_no_new_message() -> None:
    # Its change is told as the dossier's event, committed with the event.
    assert notice_kind(replace(arrival(BoxKind.RECUS), fiche=True)) is None


def test_mail_outside_any_dossier_is_not_told() -> None:
    assert notice_kind(arrival(BoxKind.RECUS, dossier=None)) is None


def test_an_outside_address_is_normalised() -> None:
    assert check_address("  Maitre.Dupont@Exemple.FR ", {"palais.test"}) == (
        "Maitre.Dupont@exemple.fr"
    )
    assert check_address("a@bücher.example", ()) == "a@xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("", '"address" must be an e-mail address'),
        (42, '"address" must be an e-mail address'),
        ("dupont", "expected name@domain"),
        ("dupont@", "expected name@domain"),
        ("du pont@exemple.fr", "the part before @"),
        ("dupont..x@exemple.fr", "the part before @"),
        ("dupont@exemple", "domain of"),
        ("dupont@-exemple.fr", "domain of"),
        ("dupont@10.0.0.1", "domain of"),
        ("dupont@exemple.fr\r\nBcc: x@y.fr", "is not valid"),
        ("x" * 65 + "@exemple.fr", "the part before @"),
        ("avocat1@palais.test", "an address of this gateway"),
        ("avocat1@avocats.palais.test", "an address of this gateway"),
    ],
)
def test_bad_addresses_are_refused_with_what_is_wrong(address: object, said: str) -> None:
    with pytest.raises(AlertRefused) as refused:
        check_address(address, {"palais.test"})
    assert said in refused.value.text


def test_mode_is_immediate_or_digest() -> None:
    assert check_mode("digest") is AlertMode.DIGEST
    with pytest.raises(AlertRefused, match="immediate"):
        check_mode("weekly")


def test_the_digest_is_the_next_one_at_the_hour_in_the_zone() -> None:
    eight = time(8, 0)
    # 15:05 in Paris: tomorrow 08:00 Paris (07:00 UTC in winter).
    assert digest_at(AT, eight, PARIS) == datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    early = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 07:00 Paris: today's
    assert digest_at(early, eight, PARIS) == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    # Summer time: 08:00 Paris is 06:00 UTC.
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert digest_at(summer, eight, PARIS) == datetime(2026, 7, 2, 6, 0, tzinfo=UTC)


def test_cutoff_says_what_may_go_now() -> None:
    eight = time(8, 0)
    assert cutoff(AlertMode.IMMEDIATE, AT, hour=eight, zone=PARIS) == AT
    # At 15:05 the latest digest was today's 08:00: what happened after waits.
    assert cutoff(AlertMode.DIGEST, AT, hour=eight, zone=PARIS) == datetime(
        2026, 11, 30, 7, 0, tzinfo=UTC
    )
    before_eight = datetime(2026, 11, 30, 6, 59, tzinfo=UTC)
    assert cutoff(AlertMode.DIGEST, before_eight, hour=eight, zone=PARIS) == datetime(
        2026, 11, 29, 7, 0, tzinfo=UTC
    )
    # An event is due from the digest that tells of it on.
    event = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    due = digest_at(event, eight, PARIS)
    assert cutoff(AlertMode.DIGEST, due, hour=eight, zone=PARIS) >= event


def test_retries_double_up_to_the_longest() -> None:
    assert [retry_delay(n, first=60, longest=600) for n in (1, 2, 3, 4, 5)] == [
        60,
        120,
        240,
        480,
        600,
    ]


def _parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_one_notice_names_the_dossier_and_the_event_in_french() -> None:
    data = compose(
        [PendingNotice(1, NoticeKind.MESSAGE, "2025-0000138", AT)],
        mode=AlertMode.IMMEDIATE,
        to="dupont@exemple.fr",
        sender="alertes@palais.test",
        now=AT,
        zone=PARIS,
        message_id="<a.1@palais.test>",
    )
    msg = _parse(data)
    assert msg["Subject"] == "[Palais] Dossier 2025-0000138 : nouveau message reçu"
    assert msg["To"] == "dupont@exemple.fr"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content()
    assert "Un nouveau message est arrivé dans les Reçus du dossier 2025-0000138" in body
    assert "le 30/11/2026 à 15:05" in body
    assert "ni son objet, ni son expéditeur" in body


def test_a_digest_counts_by_dossier_and_kind() -> None:
    notices = [
        PendingNotice(1, NoticeKind.MESSAGE, "2025-0000138", AT),
        PendingNotice(2, NoticeKind.MESSAGE, "2025-0000138", AT),
        PendingNotice(3, NoticeKind.RECEIPT, "2025-0000138", AT),
        PendingNotice(4, NoticeKind.DOSSIER_EVENT, "2025-0000200", AT),
    ]
    msg = _parse(
        compose(
            notices,
            mode=AlertMode.DIGEST,
            to="dupont@exemple.fr",
            sender="alertes@palais.test",
            now=datetime(2026, 12, 1, 7, 0, tzinfo=UTC),
            zone=PARIS,
            message_id="<a.2@palais.test>",
        )
    )
    assert msg["Subject"] == "[Palais] Récapitulatif du 01/12/2026 : 4 nouveautés dans 2 dossiers"
    body = msg.get_content()
    assert (
        "- dossier 2025-0000138 : 2 nouveaux messages reçus, 1 nouvel accusé de réception" in body
    )
    assert "- dossier 2025-0000200 : 1 événement du dossier" in body


def test_nothing_to_tell_is_no_mail() -> None:
    with pytest.raises(ValueError):
        compose(
            [],
            mode=AlertMode.DIGEST,
            to="x@exemple.fr",
            sender="s@palais.test",
            now=AT,
            zone=PARIS,
            message_id="<m@x>",
        )
