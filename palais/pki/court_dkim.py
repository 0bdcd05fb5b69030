"""The check of court systems' DKIM signatures on what they push (court listener).

There is no DNS between the gateway and the court systems: each court
system hands over its DKIM public keys as the TXT records it would publish
(``dkim-dns.txt``, the zone lines ``generate_dkim_keys`` writes), and the
configuration names those files (``[court_dkim] records``). dkimpy looks
them up through its ``dnsfunc`` hook.

A message that fails (no signature, a broken one, or one by a domain other
than its From's) is refused (SMTP 550 5.7.1, nothing stored) or flagged:
stored with an ``Authentication-Results`` field (RFC 8601) saying so.
Either way a stored message carries that field, naming this gateway, so a
reader of the dossier sees what was checked.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from palais.mailbox.errors import NotAllowed
from palais.mailbox.identity import Identity
from palais.pki.dkim import verify_incoming

__all__ = ["CourtDkim", "DkimFailure", "load_records", "parse_records"]


class DkimFailure(enum.StrEnum):
    """What the gateway does with a court system's message that fails the check."""

    OFF = "off"  # not checked (court systems that do not sign yet)
    FLAG = "flag"  # stored, marked dkim=fail
    REFUSE = "refuse"  # 550 5.7.1, nothing stored


_RECORD = re.compile(r'^(?P<name>\S+)\s+(?:\d+\s+)?(?:IN\s+)?TXT\s+(?P<strings>".*")\s*$', re.I)
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
# An Authentication-Results field already in the message, with its folded lines.
_AUTH_RESULTS = re.compile(rb"(?im)^authentication-results:[^\n]*\n(?:[ \t][^\n]*\n)*")


def parse_records(text: str, where: str = "records") -> dict[str, str]:
    """Zone-file TXT lines (``name IN TXT "..." "..."``) -> {name: joined text}.

    Names are compared without their final dot, case-insensitively.
    Comments (``;``) and blank lines are skipped; anything else is an error
    naming the line.
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        found = _RECORD.match(line)
        if found is None:
            raise ValueError(f"{where}:{number}: not a TXT record line: {line[:80]!r}")
        name = found["name"].rstrip(".").lower()
        out[name] = "".join(_STRING.findall(found["strings"]))
    return out


def load_records(paths: Iterable[Path]) -> dict[str, str]:
    """Every record of these files (a later file's record replaces an earlier one)."""
    out: dict[str, str] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"{path}: {e.strerror or e}") from e
        out.update(parse_records(text, str(path)))
    return out


class CourtDkim:
    """The court listener's check, given the court systems' published keys."""

    def __init__(
        self,
        records: Mapping[str, str],
        failure: DkimFailure,
        authserv: str,
        systems: Mapping[str, DkimFailure] | None = None,
    ) -> None:
        """``systems``: a court system's own setting by its address, in place
        of ``failure`` (one being connected flagged while the others are refused)."""
        self._records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self._failure = failure
        self._systems = {a.strip().lower(): f for a, f in (systems or {}).items()}
        self._authserv = authserv

    def _dns(self, name: bytes) -> bytes:
        key = name.decode("ascii", "replace").rstrip(".").lower()
        return self._records.get(key, "").encode("ascii", "replace")

    def check(self, who: Identity, data: bytes) -> bytes:
        """``data`` with its Authentication-Results field, or NotAllowed (refuse).

        A field the message already had under this gateway's name is dropped
        (RFC 8601 section 5: nobody else may speak for this host).
        """
        failure = self._systems.get(who.address.lower(), self._failure)
        if failure is DkimFailure.OFF:
            return data
        head_end = data.find(b"\r\n\r\n")
        head = data if head_end < 0 else data[: head_end + 2]
        signed = re.search(rb"(?im)^dkim-signature:", head) is not None
        passed = signed and verify_incoming(data, self._dns)
        if not passed and failure is DkimFailure.REFUSE:
            raise NotAllowed(
                "No valid DKIM signature of your domain on this message"
                if signed
                else "This message carries no DKIM signature; court systems must sign",
                reason=f"DKIM {'fail' if signed else 'none'} from court system {who.address}",
            )
        result = "pass" if passed else ("fail" if signed else "none")
        domain = who.address.rsplit("@", 1)[-1]
        field = (
            f"Authentication-Results: {self._authserv};\r\n\tdkim={result} header.d={domain}\r\n"
        ).encode("ascii", "replace")
        return field + self._without_own_results(data, head)

    def _without_own_results(self, data: bytes, head: bytes) -> bytes:
        own = self._authserv.lower().encode("ascii", "replace")

        def drop(found: re.Match[bytes]) -> bytes:
            value = found.group(0).split(b":", 1)[1].strip().lower()
            return b"" if value.split(b";", 1)[0].strip() == own else found.group(0)

        cleaned = _AUTH_RESULTS.sub(drop, head)
        return data if cleaned == head else cleaned + data[len(head) :]
