"""The public surface of palais.pki is what __all__ says, and nothing leaks in."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import palais.pki

PKI_DIR = Path(palais.pki.__file__).parent


def test_exported_members_exist_and_are_public() -> None:
    for name in palais.pki.__all__:
        assert hasattr(palais.pki, name), name
    public = {n for n in vars(palais.pki) if not n.startswith("_")}
    # Submodules imported anywhere become attributes of the package: not a leak.
    modules = {n for n, v in vars(palais.pki).items() if inspect.ismodule(v)} | {"annotations"}
    assert public - modules == set(palais.pki.__all__)


def test_exported_classes_and_functions_belong_to_the_package() -> None:
    for name in palais.pki.__all__:
        member = getattr(palais.pki, name)
        if isinstance(member, type) or inspect.isfunction(member):
            assert member.__module__.startswith("palais.pki."), name


def test_pki_imports_only_palais_mailbox_of_ours() -> None:
    # The dependency rule of the design: pki -> mailbox, nothing else of ours.
    for source in PKI_DIR.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for module in names:
                if module == "palais" or module.startswith("palais."):
                    assert module.startswith(("palais.pki", "palais.mailbox")), (
                        source.name,
                        module,
                    )
