"""Dependencies point inwards: gateway -> mailbox, pki, storage; storage and pki -> mailbox.

Read from the source with ``ast`` (imports inside functions count too), so a
lazy import cannot slip past.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "palais"
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}


def modules(sub: str, package: Path = PACKAGE) -> list[Path]:
    return sorted((package / sub).rglob("*.py"))


def imported(path: Path, package_dir: Path = PACKAGE) -> Iterator[tuple[int, str]]:
    """Absolute names of every module ``path`` imports, with the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    package = parts[:-1]  # a module and a package's __init__ alike
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name


def offences(
    sub: str, allowed: tuple[str, ...], *, stdlib: bool, package: Path = PACKAGE
) -> list[str]:
    out = []
    for path in modules(sub, package):
        for line, name in imported(path, package):
            top = name.split(".")[0]
            if stdlib and top in STDLIB:
                continue
            if not stdlib and top != "palais":
                continue  # third-party libraries are this layer's business
            if any(name == a or name.startswith(a + ".") for a in allowed):
                continue
            out.append(f"{path.relative_to(package.parent)}:{line} imports {name}")
    return out


def test_the_domain_imports_only_the_standard_library_and_itself() -> None:
    # pydantic too: the structured documents' models (saisine, constitution...)
    # are domain rules, and pydantic validates values without any I/O;
    # icalendar likewise only makes values (the Fiche dossier's hearings).
    allowed = ("palais.mailbox", "pydantic", "pydantic_core", "icalendar")
    assert offences("mailbox", allowed, stdlib=True) == []


@pytest.mark.parametrize(
    ("layer", "allowed"),
    [
        # palais.periodic: the task behind the runners of due work (standard
        # library only), shared with the gateway's senders.
        ("storage", ("palais.storage", "palais.mailbox", "palais.periodic")),
        ("pki", ("palais.pki", "palais.mailbox")),
    ],
)
def test_inner_layers_never_reach_outwards(layer: str, allowed: tuple[str, ...]) -> None:
    assert offences(layer, allowed, stdlib=False) == []


def test_front_ends_do_not_open_storage_themselves() -> None:
    # One composition root (palais/app.py) wires storage into the front-ends.
    leaks = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in modules("gateway")
        for line, name in imported(path)
        if name.startswith("palais.storage")
    ]
    assert leaks == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The rule above must be able to fail: a domain module importing
    # sqlalchemy, or storage relatively, is caught.
    package = tmp_path / "palais"
    (package / "mailbox").mkdir(parents=True)
    (package / "mailbox" / "probe.py").write_text(
        "import sqlalchemy\nfrom ..storage import open_storage\nfrom . import boxes\n"
    )
    found = offences("mailbox", ("palais.mailbox",), stdlib=True, package=package)
    assert len(found) == 2, found
    assert any("imports sqlalchemy" in f for f in found)
    assert any("imports palais.storage" in f for f in found)
