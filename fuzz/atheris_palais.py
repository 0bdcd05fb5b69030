"""Coverage-guided fuzzing of Palais's parsers with atheris (libFuzzer), for long runs.

    python fuzz/atheris_palais.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of the names in ``TARGETS``; an empty corpus directory is
first filled with valid inputs (``seeds``). Each target checks the same
properties as the hypothesis tests in tests/fuzz/ (those run in CI on a fixed
budget): an input that breaks one raises, and libFuzzer saves it as
crash-<sha1>. See fuzz/README.md.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def imap_command(data: bytes) -> None:
    """Framing and command parsing, as the session runs them: any bytes give
    commands or FramingError, then arguments or ParseError, within the limits."""
    from palais.gateway.imap.framing import FramingError, Literal
    from palais.gateway.imap.parser import ParseError
    from tests.fuzz.imapwire import frame_all, parse_command
    from tests.fuzz.test_fuzz_framing import SMALL

    for limits in (None, SMALL):
        commands, _ = frame_all(data) if limits is None else frame_all(data, limits)
        for raw in commands:
            if isinstance(raw, FramingError):
                continue
            if limits is SMALL:
                texts = [s for s in raw.segments if isinstance(s, bytes)]
                assert all(len(t) <= SMALL.max_line for t in texts)
                assert sum(isinstance(s, Literal) for s in raw.segments) <= SMALL.max_literals
            for utf8 in (False, True):
                with contextlib.suppress(ParseError):
                    parse_command(raw, utf8=utf8)


def mutf7(data: bytes) -> None:
    """Decoding refuses with ValueError or gives the one canonical spelling;
    encoding any name round-trips."""
    from palais.gateway.imap import mutf7

    text = data.decode("latin-1")
    try:
        name = mutf7.decode(text)
    except ValueError:
        pass
    else:
        assert mutf7.encode(name) == text
    name = data.decode("utf-8", "replace")
    assert mutf7.decode(mutf7.encode(name)) == name


def sequence_set(data: bytes) -> None:
    """Parsing refuses with SequenceSetError or gives a set whose members
    agree with the naive reference."""
    from palais.gateway.imap.sequence import SequenceSetError, parse_sequence_set
    from tests.fuzz.test_fuzz_sequence import naive_members

    try:
        seqset = parse_sequence_set(data)
    except SequenceSetError:
        return
    text = data.decode("ascii")
    known = list(range(1, 101, 3))
    members = naive_members(text, known[-1])
    assert seqset.uids(known) == [u for u in known if u in members]


def mime(data: bytes) -> None:
    """Any message bytes: a MIME tree, every section, BODYSTRUCTURE, ENVELOPE,
    and a summary or InvalidMessage."""
    from tests.fuzz.test_fuzz_mime import (
        test_any_bytes_give_a_structure,
        test_summary_or_invalid_message,
    )

    # The hypothesis tests' bodies, called on this one input.
    test_any_bytes_give_a_structure.hypothesis.inner_test(data)  # type: ignore[attr-defined]
    for submitted in (False, True):
        test_summary_or_invalid_message.hypothesis.inner_test(data, submitted)  # type: ignore[attr-defined]


def smtp_address(data: bytes) -> None:
    """The MAIL/RCPT address fast path agrees with aiosmtpd's parser."""
    from tests.fuzz.test_fuzz_smtp_address import agree

    arg = data.decode("utf-8", "replace")
    for limit in (0, 64):
        agree(arg, limit)


def seeds(name: str) -> list[bytes]:
    """Valid inputs to start an empty corpus from (the hypothesis tests' seeds)."""
    if name == "imap":
        from tests.fuzz.test_fuzz_imap_parser import SEEDS

        return [seed + b"\r\n" for seed in SEEDS]
    if name == "mime":
        from tests.fuzz.test_fuzz_mime import HEADER_PIECES

        return [b"".join(HEADER_PIECES[i:] + HEADER_PIECES[:i]) for i in range(0, 24, 4)]
    return {
        "mutf7": [b"Envoy&AOk-s", b"&-", b"Dossiers/2025-0000138/Re&AOc-us", b"&2D3eAA-"],
        "sequence": [b"1:3,5,7:*,9:8", b"*", b"4294967295", b"2,4:7"],
        "smtp": [b"<a@b.c> SIZE=10 BODY=8BITMIME", b'<"a b"@[127.0.0.1]>', b"a@b", b"<@x:a@b>"],
    }[name]


def seed_empty_corpora(name: str, argv: list[str]) -> None:
    for arg in argv[1:]:
        path = Path(arg)
        if not arg.startswith("-") and path.is_dir() and not any(path.iterdir()):
            for i, seed in enumerate(seeds(name)):
                (path / f"seed-{i:03d}").write_bytes(seed)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "imap": imap_command,
    "mutf7": mutf7,
    "sequence": sequence_set,
    "mime": mime,
    "smtp": smtp_address,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus]")
    name = sys.argv.pop(1)
    target = TARGETS[name]

    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    # Coverage feedback from our own code (and the email parser the SMTP and
    # header code lean on): everything that imports palais runs inside this
    # block, or the modules would be imported uninstrumented.
    with atheris.instrument_imports(include=["palais", "email", "aiosmtpd"]):
        target(b"")
        seed_empty_corpora(name, sys.argv)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
