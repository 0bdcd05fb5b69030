"""Modified UTF-7: any name survives the round trip; decoding refuses cleanly."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from palais.gateway.imap import mutf7
from tests.fuzz.budget import FUZZ, TEST_TIMEOUT

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

# Mailbox names: any Unicode text but lone surrogates (they have no UTF-16
# encoding, and a name comes from UTF-8 or from modified UTF-7, so it never
# holds one).
names = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# Near-miss wire forms: the encoding's own alphabet, so shifts, base64 and
# terminators meet far more often than in random text.
wire = st.text(st.sampled_from("&-,+/=AZaz09OkAOk& -\x7f\x00é"), max_size=30) | st.text(max_size=20)


@FUZZ
@given(names)
@example("&")
@example("Envoyés")
@example("&Envoyés&-")
@example("\U0001f600 \x00~")
def test_round_trip(name: str) -> None:
    wire_form = mutf7.encode(name)
    assert wire_form.isascii() and wire_form.isprintable()
    assert mutf7.decode(wire_form) == name


@FUZZ
@given(wire)
@example("&AOk-&AOk-")
@example("&AOk")
@example("&AGE-")
@example("&2D3eAA-")
def test_decode_is_strict(text: str) -> None:
    """Arbitrary text decodes or raises ValueError; what decodes is the one canonical spelling."""
    try:
        name = mutf7.decode(text)
    except ValueError:
        return
    assert mutf7.encode(name) == text
