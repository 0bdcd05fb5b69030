"""Reading the juridictions directory from its TOML file (the edge of
``palais.mailbox.juridictions``, which holds and searches it).

An instance reads ``juridictions.toml`` beside its ``palais.toml``
(``palais init`` puts a copy of the sample there, for the operator to
edit); without one, the sample shipped with the package
(``palais/samples/``, which ``conf/juridictions.toml`` links to), so that
an installed wheel has it too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from palais.mailbox.juridictions import BadDirectory, JuridictionDirectory, directory_from_data

SAMPLE = Path(__file__).resolve().parent / "samples" / "juridictions.toml"
INSTANCE_FILE = "juridictions.toml"


class DirectoryFileError(OSError):
    """The file cannot be read or is not a directory: the message names it
    (an OSError: ``palais serve`` says it and does not start)."""


def directory_file(root: Path) -> Path:
    """The directory file an instance rooted at ``root`` reads."""
    own = root / INSTANCE_FILE
    return own if own.exists() else SAMPLE


def load_directory(path: Path) -> JuridictionDirectory:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DirectoryFileError(f"{path}: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DirectoryFileError(f"{path}: {e}") from e
    try:
        return directory_from_data(data)
    except BadDirectory as e:
        raise DirectoryFileError(f"{path}: {e}") from e
