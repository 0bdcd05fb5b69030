"""Field errors of structured documents: English field paths, French messages.

A structured document (saisine, constitution, court event...) is checked
twice over, and every error of both is reported at once: its shape by its
pydantic model (types, mandatory fields per person type, lengths), and the
rules that need several fields or outside facts. The rules read the parsed
JSON itself (``Doc``), each skipping what the shape already refuses, so
that a lawyer sees a wrong section and a missing surname in one answer.
Both speak the same language: a ``FieldError`` naming the field by its path
in the JSON document (``actors[0].address.postcode``), with a message a
French lawyer reads.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

# The field's free texts: at most 100 characters (the portal's own limit).
FREE_TEXT_LIMIT = 100
FreeText = Annotated[str, Field(min_length=1, max_length=FREE_TEXT_LIMIT)]
DOSSIER_NUMBER_PATTERN = r"^[0-9]{4}-[0-9]{7}$"
DossierNumber = Annotated[
    str, Field(pattern=DOSSIER_NUMBER_PATTERN, description="numéro national AAAA-NNNNNNN")
]


class Document(BaseModel):
    """Every structured document: unknown fields are errors (a misspelt field
    would otherwise be silently dropped), and the model is read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A document as parsed from its JSON, before (or whatever) its shape.
Doc = Mapping[str, Any]


def table(value: object) -> Doc:
    """``value`` if it is a JSON object, else an empty one (the shape says what is wrong)."""
    return value if isinstance(value, dict) else {}


def tables(value: object) -> list[Doc]:
    """The objects of a JSON array (others as empty ones, keeping the indexes)."""
    return [table(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str  # "" for the document as a whole
    message: str  # in French, safe to show

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def path_of(location: Iterable[int | str], tags: Container[str] = ()) -> str:
    """``('actors', 0, 'physique', 'surname')`` -> ``actors[0].surname``.

    ``tags`` are the values of the union discriminators that pydantic puts in
    the location (the variant tried), not fields of the document.
    """
    out = ""
    for item in location:
        if isinstance(item, int):
            out += f"[{item}]"
        elif item in tags:
            continue
        else:
            out += f".{item}" if out else item
    return out


# Shapes of text fields, as a lawyer is told them (pydantic only knows the regex).
_PATTERNS = {
    DOSSIER_NUMBER_PATTERN: "numéro de dossier attendu sous la forme AAAA-NNNNNNN",
}


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        return "champ obligatoire"
    if kind == "string_too_long":
        return f"{ctx.get('max_length')} caractères au plus"
    if kind == "string_too_short":
        return "ne peut être vide"
    if kind in ("literal_error", "enum", "union_tag_invalid"):
        expected = str(ctx.get("expected") or ctx.get("expected_tags") or "")
        expected = expected.replace(" or ", " ou ")
        # pydantic lists a union's tags without the "or" it puts before an enum's last.
        head, comma, last = expected.rpartition(", ")
        if kind == "union_tag_invalid" and comma:
            expected = f"{head} ou {last}"
        return f"valeur non admise (attendu : {expected})"
    if kind == "union_tag_not_found":
        return "champ obligatoire"
    if kind == "string_pattern_mismatch":
        return _PATTERNS.get(str(ctx.get("pattern")), "format invalide")
    if kind == "extra_forbidden":
        return "champ inconnu"
    if kind == "string_type":
        return "doit être un texte"
    if kind == "bool_type" or kind == "bool_parsing":
        return "doit valoir true ou false"
    if kind.startswith("int_"):
        return "doit être un nombre entier"
    if kind.startswith("date_") and not kind.startswith("datetime"):
        return "date invalide (AAAA-MM-JJ)"
    if kind.startswith("datetime_") or kind.startswith("timezone_"):
        return "date et heure invalides (AAAA-MM-JJTHH:MM:SS+01:00)"
    if kind.startswith("time_"):
        return "heure invalide (HH:MM)"
    if kind == "list_type":
        return "doit être une liste"
    if kind == "too_short":
        return f"au moins {ctx.get('min_length')} élément(s)"
    if kind == "too_long":
        return f"au plus {ctx.get('max_length')} élément(s)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "doit être un objet"
    if kind == "json_invalid":
        return "document JSON illisible"
    if kind == "json_type":
        return "doit être un document JSON"
    return "valeur invalide"


def shape_errors(error: ValidationError, tags: Mapping[str, str] | None = None) -> list[FieldError]:
    """pydantic's errors as field errors, in the document's order.

    ``tags``: each union variant's tag and its name for a lawyer ("physique":
    "personne physique"), said after a field the variant requires.
    """
    tags = tags or {}
    out: list[FieldError] = []
    for detail in error.errors(include_url=False):
        location = list(detail["loc"])
        if detail["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # The discriminator itself is missing or wrong: name it.
            location.append(str((detail.get("ctx") or {}).get("discriminator", "")).strip("'"))
        message = _message(detail)
        variant = next((t for t in location if isinstance(t, str) and t in tags), None)
        if detail["type"] == "missing" and variant is not None:
            message += f" ({tags[variant]})"
        out.append(FieldError(path_of(location, tags), message))
    return out


def sorted_errors(errors: Sequence[FieldError]) -> list[FieldError]:
    """One error per (field, message), first seen first."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.path, e.message) not in seen:
            seen.add((e.path, e.message))
            out.append(e)
    return out
