"""[alerts]: defaults, and bad values named with the file and the key."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from palais.config import ConfigError, load_settings


def test_defaults_send_nothing_until_a_relay_is_named(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text("")
    a = load_settings(p).alerts
    assert a.relay_host == "" and a.digest_hour() == time(8, 0) and a.timezone == "Europe/Paris"


def test_a_relay_and_a_digest_time_with_seconds(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text(
        '[alerts]\nrelay_host = "smtp.example.fr"\nrelay_port = 587\ndigest_time = "07:30:15"\n'
    )
    a = load_settings(p).alerts
    assert (a.relay_host, a.relay_port, a.digest_hour()) == (
        "smtp.example.fr",
        587,
        time(7, 30, 15),
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('digest_time = "8h"', r"\[alerts\] digest_time must be HH:MM or HH:MM:SS, not '8h'"),
        ('timezone = "Mars/Olympus"', r"\[alerts\] timezone: unknown time zone 'Mars/Olympus'"),
        ("poll_interval = 0", r"\[alerts\] intervals must be positive"),
        ('relay_port = "25"', r"\[alerts\] relay_port: expected an integer"),
        ("relay = 1", r"unknown key 'relay' in \[alerts\]"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, said: str) -> None:
    p = tmp_path / "palais.toml"
    p.write_text(f"[alerts]\n{text}\n")
    with pytest.raises(ConfigError, match=r"palais.toml: " + said):
        load_settings(p)
