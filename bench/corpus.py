"""Messages used by the workloads.

All messages are plain RFC 5322 text, CRLF line ends, ASCII only, no line
starting with a dot (so no dot-stuffing is needed on the wire), and carry a
unique Message-ID so that a message can be recognised when it shows up over
IMAP.
"""

from __future__ import annotations

import email.utils
import random
import time

SEARCH_WORD = "pourvoi"  # present in the Subject of every 100th folder message
# In the body of every 100th folder message (i % 100 == 50), in no header and
# in no other body: SEARCH BODY and SEARCH TEXT find exactly 1 % of the folder.
BODY_WORD = "forclusion"
# Folder messages form threads of this many: the first of each ten is the
# root, the nine others reply to it (In-Reply-To and References), so THREAD
# REFERENCES has threads to build.
THREAD_SIZE = 10
DOMAIN = "bench.invalid"

_WORDS = [
    "audience",
    "conclusions",
    "dossier",
    "greffe",
    "avocat",
    "partie",
    "demande",
    "jugement",
    "renvoi",
    "expertise",
    "piece",
    "bordereau",
    "signification",
    "assignation",
    "appel",
    "juridiction",
    "instance",
    "tribunal",
    "memoire",
    "notification",
    "delai",
    "requete",
    "ordonnance",
    "decision",
    "provision",
    "constitution",
    "saisine",
    "calendrier",
]


def filler_lines(n_bytes: int, seed: int = 1) -> list[bytes]:
    """ASCII text lines (<= 76 chars + CRLF) adding up to about ``n_bytes``."""
    rnd = random.Random(seed)
    lines: list[bytes] = []
    total = 0
    while total < n_bytes:
        words: list[str] = []
        length = 0
        while length < 70:
            w = rnd.choice(_WORDS)
            words.append(w)
            length += len(w) + 1
        line = " ".join(words)[:76].rstrip().encode("ascii") + b"\r\n"
        lines.append(line)
        total += len(line)
    return lines


def message_id(tag: str, i: int, run_id: str) -> str:
    return f"<bench-{run_id}-{tag}-{i}@{DOMAIN}>"


class MessageMaker:
    """Builds the SMTP payloads (headers + body of about ``size_kib`` KiB)."""

    def __init__(self, size_kib: float, run_id: str) -> None:
        self.size = int(size_kib * 1024)
        self.run_id = run_id
        self._date = email.utils.formatdate(time.time(), localtime=False)
        # Headers take ~350 bytes; the body fills the rest.
        self._body = b"".join(filler_lines(max(64, self.size - 360), seed=7))

    def make(
        self, *, tag: str, i: int, sender: str, recipient: str, subject_prefix: str = ""
    ) -> tuple[str, bytes]:
        mid = message_id(tag, i, self.run_id)
        head = (
            f"From: <{sender}>\r\n"
            f"To: <{recipient}>\r\n"
            f"Subject: {subject_prefix}bench {tag} {i}\r\n"
            f"Date: {self._date}\r\n"
            f"Message-ID: {mid}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
        ).encode("ascii")
        return mid, head + self._body


_FOLDER_BODY = b"".join(filler_lines(900, seed=3))
_FOLDER_BODY_WITH_WORD = (
    _FOLDER_BODY[: len(_FOLDER_BODY) // 2]
    + f"Le moyen tire de la {BODY_WORD} est ecarte.\r\n".encode("ascii")
    + _FOLDER_BODY[len(_FOLDER_BODY) // 2 :]
)
_FOLDER_EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z


def folder_message(
    i: int,
    *,
    subject_prefix: str = "",
    sender: str = "avocat1@barreau.test",
    recipient: str = "greffe@justice.test",
) -> bytes:
    """Message i of the large IMAP folder (about 1.3 KiB)."""
    word = f" {SEARCH_WORD}" if i % 100 == 0 else ""
    date = email.utils.formatdate(_FOLDER_EPOCH + i * 60, localtime=False)
    root = i - i % THREAD_SIZE
    reply = (
        f"In-Reply-To: <bench-folder-{root}@{DOMAIN}>\r\n"
        f"References: <bench-folder-{root}@{DOMAIN}>\r\n"
        if root != i
        else ""
    )
    head = (
        f"From: Avocat Bench <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: {subject_prefix}Conclusions{word} numero {i}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <bench-folder-{i}@{DOMAIN}>\r\n"
        f"{reply}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode("ascii")
    return head + (_FOLDER_BODY_WITH_WORD if i % 100 == 50 else _FOLDER_BODY)
