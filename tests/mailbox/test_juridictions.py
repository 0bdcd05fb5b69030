"""The juridictions directory: the shipped sample, and the search by city."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from palais.juridictions_file import SAMPLE, DirectoryFileError, load_directory
from palais.mailbox.juridictions import (
    BadDirectory,
    Juridiction,
    JuridictionDirectory,
    TooShort,
    directory_from_data,
    folded,
)
from palais.mailbox.saisine import JuridictionType

DIRECTORY = load_directory(SAMPLE)


def codes(found: Sequence[Juridiction]) -> list[str]:
    return [j.code for j in found]


def test_the_sample_is_a_realistic_directory() -> None:
    assert 20 <= len(DIRECTORY) <= 40
    assert {j.type for j in DIRECTORY} == set(JuridictionType)
    assert len({j.city for j in DIRECTORY}) >= 10
    for j in DIRECTORY:
        assert j.services and j.saisine_address != j.constitution_address
        assert "@" in j.court_system.address and j.court_system.subject.startswith("CN=")


def test_the_demo_juridiction_is_in_the_sample() -> None:
    cph = DIRECTORY.get("CPH-BORDEAUX")
    assert cph is not None and cph.type is JuridictionType.CPH
    assert cph.court_system.address == "portalis@cph-bordeaux.juridictions.palais.test"
    assert ("CPH BORDEAUX - Commerce", "cph-bordeaux-commerce@greffes.palais.test") in [
        (s.name, s.address) for s in cph.services
    ]


def test_three_letters_of_the_city_find_its_juridictions() -> None:
    assert codes(DIRECTORY.search("bor")) == ["CPH-BORDEAUX", "TJ-BORDEAUX"]
    assert codes(DIRECTORY.search("BOR")) == ["CPH-BORDEAUX", "TJ-BORDEAUX"]


def test_accents_and_hyphens_do_not_matter() -> None:
    expected = ["CPH-SAINT-ETIENNE", "TJ-SAINT-ETIENNE"]
    assert codes(DIRECTORY.search("Saint-Étienne")) == expected
    assert codes(DIRECTORY.search("saint etienne")) == expected
    assert codes(DIRECTORY.search("éti")) == expected  # a word inside the name
    assert codes(DIRECTORY.search("CHÂ")) == ["TJ-CHALONS-EN-CHAMPAGNE"]
    assert codes(DIRECTORY.search("aix-en")) == ["CPH-AIX-EN-PROVENCE", "TJ-AIX-EN-PROVENCE"]


def test_a_search_matches_the_start_of_a_word_only() -> None:
    assert DIRECTORY.search("deaux") == []
    assert codes(DIRECTORY.search("sai")) == [
        "CPH-SAINT-ETIENNE",
        "TJ-SAINT-ETIENNE",
        "TPROX-SAINT-GERMAIN-EN-LAYE",
        "TPROX-SAINT-NAZAIRE",
    ]


def test_a_search_may_name_the_type() -> None:
    assert codes(DIRECTORY.search("lyo", JuridictionType.TJ)) == ["TJ-LYON"]


@pytest.mark.parametrize("text", ["", "bo", "b-o", "é ", "  "])
def test_fewer_than_three_letters_are_refused(text: str) -> None:
    with pytest.raises(TooShort) as caught:
        DIRECTORY.search(text)
    assert caught.value.text == "Saisissez au moins 3 lettres de la ville"


def test_folded_text() -> None:
    assert folded("Saint-Étienne") == "saint etienne"
    assert folded("Châlons-en-Champagne") == "chalons en champagne"


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "code": "TJ-X",
        "type": "TJ",
        "name": "Tribunal judiciaire de X",
        "city": "X",
        "address": "1 rue X",
        "saisine_address": "s@x.test",
        "constitution_address": "c@x.test",
        "court_system": {"address": "p@x.test", "subject": "CN=P"},
        "service": [{"name": "TJ X - Civil", "address": "civil@x.test"}],
    }
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (_entry(type="TGI"), "juridiction TJ-X: type must be CPH, TPROX or TJ"),
        (_entry(city=""), "juridiction TJ-X: city must be a non-empty string"),
        (_entry(court="x"), "juridiction TJ-X: unknown key 'court'"),
        (_entry(court_system="p@x.test"), "juridiction TJ-X: court_system must be a table"),
    ],
)
def test_a_bad_entry_is_named(entry: dict[str, object], said: str) -> None:
    with pytest.raises(BadDirectory) as caught:
        directory_from_data({"juridiction": [entry]})
    assert str(caught.value).startswith(said)


def test_a_code_appears_once() -> None:
    with pytest.raises(BadDirectory):
        directory_from_data({"juridiction": [_entry(), _entry()]})
    assert isinstance(directory_from_data({"juridiction": [_entry()]}), JuridictionDirectory)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "juridictions.toml"
    bad.write_text("[[juridiction]\n", encoding="utf-8")
    with pytest.raises(DirectoryFileError) as caught:
        load_directory(bad)
    assert str(caught.value).startswith(str(bad))
    with pytest.raises(DirectoryFileError):
        load_directory(tmp_path / "missing.toml")


def test_the_sample_ships_inside_the_package() -> None:
    """`palais init` copies the sample: a wheel must carry it (it once lay
    in conf/ only, and `palais init` from an installed wheel failed)."""
    import tomllib

    import palais

    package = Path(palais.__file__).resolve().parent
    assert SAMPLE.is_relative_to(package) and SAMPLE.is_file()
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = pyproject["tool"]["setuptools"]["package-data"]["palais"]
    assert any(SAMPLE.relative_to(package).match(pattern) for pattern in shipped)
    # conf/ shows the same file to whoever reads the checkout.
    assert (package.parent / "conf" / "juridictions.toml").resolve() == SAMPLE
