from __future__ import annotations

from pathlib import Path

import pytest

from palais.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_with_defaults() -> None:
    s = load_settings(ROOT / "conf" / "palais.example.toml")
    assert s.listen.smtps == 10465
    assert s.smtp.max_message_size == 26214400
    assert s.tls.certificate == ROOT / "conf" / "pki" / "server.pem"
    assert s.trust.crls[0] == ROOT / "conf" / "pki" / "crl" / "avocats.pem"
    assert s.database_url() == "sqlite:///" + str(ROOT / "conf" / "palais.db")


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text("[smtp]\nmax_size = 3\n")
    with pytest.raises(ConfigError, match=r"palais.toml: unknown key 'max_size' in \[smtp\]"):
        load_settings(p)


def test_unknown_section(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text("[smpt]\n")
    with pytest.raises(ConfigError, match=r"unknown section \[smpt\]"):
        load_settings(p)


def test_wrong_type(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text('[listen]\nsmtps = "465"\n')
    with pytest.raises(ConfigError, match=r"\[listen\] smtps: expected an integer"):
        load_settings(p)


def test_absolute_database_url_untouched(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text('[database]\nurl = "postgresql+psycopg://u@h/db"\n')
    assert load_settings(p).database_url() == "postgresql+psycopg://u@h/db"


def test_event_loop_is_checked(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text('[instance]\nevent_loop = "trio"\n')
    with pytest.raises(ConfigError, match=r"event_loop must be one of uvloop, asyncio"):
        load_settings(p)
    p.write_text('[instance]\nevent_loop = "asyncio"\n')
    assert load_settings(p).instance.event_loop == "asyncio"


def test_a_court_system_s_own_dkim_setting_is_read_and_checked(tmp_path: Path) -> None:
    p = tmp_path / "palais.toml"
    p.write_text(
        '[court_dkim]\nfailure = "refuse"\n[court_dkim.systems]\n"portalis@cph.test" = "flag"\n'
    )
    dkim = load_settings(p).court_dkim
    assert (dkim.failure, dkim.systems) == ("refuse", {"portalis@cph.test": "flag"})
    p.write_text('[court_dkim.systems]\n"portalis@cph.test" = "maybe"\n')
    with pytest.raises(
        ConfigError,
        match=r"\[court_dkim.systems\] portalis@cph.test: must be one of off, flag, refuse",
    ):
        load_settings(p)
