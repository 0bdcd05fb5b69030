"""Any message bytes give a MIME tree, sections, ENVELOPE, a summary or InvalidMessage."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from palais.gateway.imap import response
from palais.gateway.imap.envelope import envelope, parse_addresses
from palais.gateway.imap.headers import parse_content_value
from palais.gateway.imap.mime import (
    Part,
    SectionSpec,
    bodystructure,
    extract,
    header_fields,
    parse_message,
)
from palais.mailbox.errors import InvalidMessage
from palais.mailbox.message import MessageSummary, header_size, summarize
from palais.mailbox.message import header_fields as message_header_fields
from tests.fuzz.budget import FUZZ, TEST_TIMEOUT

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

# -- arbitrary messages --------------------------------------------------------

HEADER_PIECES = [
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/digest; boundary="b b"\r\n',
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=(c)utf-8; name*0=x\r\n",
    b"Content-Type: /\r\n",
    b"Content-Type: ;;=\r\n",
    b'Content-Disposition: attachment; filename="a\\"b"\r\n',
    b"Content-Transfer-Encoding: BASE64 (x)\r\n",
    b"Content-Language: fr, , en\r\n",
    b'From: A B <a@b.c>, (c) d@e, g: h@i, "j" <k@l>;\r\n',
    b"Cc: " + b"(" * 600 + b"\r\n",
    b"To: <@route,@x:m@n>, undisclosed-recipients:;\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?= =?idna?q?x?= =?bogus?b?AA==?=\r\n",
    b"Date: Mon, 1 Jan 2024 10:00:00 +0100\r\n",
    b"Date: 99 Foo 99999 99:99:99 +9999\r\n",
    b"Date: 1 Jan 2024 10:00:00 +0100",
    b"99999999999",
    b"Message-ID: <x@y>\r\n",
    b" folded\r\n",
    b"\tfolded\r\n",
    b"no colon\r\n",
    b":\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"--b\r\n",
    b"--b--\r\n",
    b"--b b\r\n",
    b"body text\r\n",
    b"\x00\xff\xc3\xa9",
]
messages = st.lists(st.sampled_from(HEADER_PIECES) | st.binary(max_size=10), max_size=25).map(
    b"".join
) | st.binary(max_size=300)


def walk(part: Part) -> list[Part]:
    out = [part]
    for child in part.children:
        out += walk(child)
    if part.message is not None:
        out += walk(part.message)
    return out


def paths(part: Part, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Section numbers a client could ask for, including some that do not exist."""
    found = [(*prefix, len(part.children) + 1)]
    kids = part.children or ([part.message] if part.message is not None else [])
    for i, child in enumerate(kids, 1):
        found.append((*prefix, i))
        found += paths(child, (*prefix, i))
    return found[:30]


@FUZZ
@given(messages)
@example(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--")
@example(b"Content-Type: message/rfc822\r\n\r\n" * 60)
@example(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" * 60)
@example(b"\r\n")
@example(b"")
def test_any_bytes_give_a_structure(data: bytes) -> None:
    root = parse_message(data)
    assert (root.header_start, root.end) == (0, len(data))
    for part in walk(root):
        assert 0 <= part.header_start <= part.body_start <= part.end <= len(data)
        assert part.maintype and part.subtype
        for child in part.children:
            assert part.body_start <= child.header_start and child.end <= part.end
        for a, b in itertools.pairwise(part.children):
            assert a.end <= b.header_start
        for f in part.fields:
            assert f.name == f.name.lower() and f.name
    # Sections are slices of the stored bytes, never re-serialised.
    assert extract(data, root, SectionSpec()) == data
    header = extract(data, root, SectionSpec(kind="HEADER"))
    text = extract(data, root, SectionSpec(kind="TEXT"))
    assert header is not None and text is not None and header + text == data
    for path in paths(root):
        for kind in ("", "MIME", "HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            spec = SectionSpec(path, kind, ("from", "content-type"))
            got = extract(data, root, spec)
            assert got is None or isinstance(got, bytes)
    for utf8, extended in itertools.product((False, True), repeat=2):
        structure = bodystructure(data, root, extended=extended)
        wire = response.encode(structure, utf8=utf8)
        assert wire.startswith(b"(") or wire.startswith(b'"')
        response.encode(envelope(root.fields), utf8=utf8)
    # HEADER.FIELDS gives back exactly the chosen fields, in order; .NOT the others.
    names = ("from", "content-type")
    for kind, keep in (("HEADER.FIELDS", True), ("HEADER.FIELDS.NOT", False)):
        block = extract(data, root, SectionSpec((), kind, names))
        assert block is not None and block.endswith(b"\r\n")
        expected = [f.name for f in root.fields if (f.name in names) == keep]
        assert [f.name for f in header_fields(block)] == expected, block


@FUZZ
@given(messages, st.booleans())
# Regressions: these charsets' codecs cannot decode with errors="replace".
@example(b"Subject: =?idna?q?abc?=\r\n\r\nx", False)
@example(b"Subject: =?undefined?q?abc?=\r\n\r\nx", True)
@example(b"From: =?idna?q?abc?= <a@b>\r\n\r\nx", True)
@example(b"Subject: =?u\0tf-8?q?x?=\r\n\r\nx", False)
@example(
    b"From: " + b"(" * 600 + b"\r\n\r\nx", True
)  # RecursionError in getaddresses  # found by atheris: a NUL in the charset
@example(b"Date: Mon, 1 Jan 99999 10:00:00 +0100\r\n\r\nx", False)
# Regressions (found by fuzz/atheris_palais.py mime): OverflowError from the date parser.
@example(b"Date: Mon, 1 Jan 2024 10:00:00 +010044444444444\r\n\r\nx", True)
@example(b"Date: 1 Jan 99999999999999999999 10:00:00 +0000\r\n\r\nx", False)
@example(b"Date: 1 Jan 2024 99999999999:00:00 +0000\r\n\r\nx", False)
@example(b"Subject: a\r\nSubject: b\r\n\r\nx", True)
def test_summary_or_invalid_message(data: bytes, submitted: bool) -> None:
    try:
        summary = summarize(data, submitted=submitted)
    except InvalidMessage as exc:
        assert exc.text and exc.reason
        return
    assert isinstance(summary, MessageSummary)
    assert 0 < summary.header_size <= len(data)
    assert summary.sent_date is None or summary.sent_date.tzinfo is not None


# -- a built MIME tree parses back to itself -----------------------------------


@dataclass
class Leaf:
    ctype: bytes
    body: bytes


@dataclass
class Multi:
    subtype: bytes
    boundary: bytes
    children: list[Leaf | Multi]


boundary_counter = itertools.count()
# Bodies never contain "-", so no body line can look like a delimiter.
bodies = st.text("abc xyz\r\n\t=.;é", max_size=40).map(lambda s: s.encode())
leaves = st.builds(
    Leaf, st.sampled_from([b"text/plain", b"application/pdf", b"text/html; charset=utf-8"]), bodies
)


def multis(children: st.SearchStrategy[list[Leaf | Multi]]) -> st.SearchStrategy[Multi]:
    return st.builds(
        Multi,
        st.sampled_from([b"mixed", b"alternative", b"signed"]),
        st.integers(0, 10**6).map(lambda n: b"=_%d" % n),
        children,
    )


trees = st.recursive(
    leaves, lambda inner: multis(st.lists(inner, min_size=1, max_size=4)), max_leaves=12
)


def serialize(node: Leaf | Multi, depth: int = 0) -> bytes:
    if isinstance(node, Leaf):
        return b"Content-Type: " + node.ctype + b"\r\n\r\n" + node.body
    boundary = node.boundary + b"_%d" % depth  # unique per level: nested ones never collide
    out = b'Content-Type: multipart/%s; boundary="%s"\r\n\r\npreamble\r\n' % (
        node.subtype,
        boundary,
    )
    for child in node.children:
        out += b"--" + boundary + b"\r\n" + serialize(child, depth + 1) + b"\r\n"
    return out + b"--" + boundary + b"--\r\nepilogue\r\n"


def check_tree(
    data: bytes, part: Part, node: Leaf | Multi, root: Part, path: tuple[int, ...]
) -> None:
    if isinstance(node, Leaf):
        assert not part.is_multipart
        assert data[part.body_start : part.end] == node.body
        assert (part.maintype + b"/" + part.subtype) == node.ctype.split(b";")[0]
        if path:
            assert extract(data, root, SectionSpec(path)) == node.body
        return
    assert part.is_multipart and part.subtype == node.subtype
    assert len(part.children) == len(node.children)
    for i, (child_part, child) in enumerate(zip(part.children, node.children, strict=True), 1):
        check_tree(data, child_part, child, root, (*path, i))


@FUZZ
@given(trees)
def test_built_tree_parses_back(tree: Leaf | Multi) -> None:
    data = serialize(tree)
    root = parse_message(data)
    check_tree(data, root, tree, root, ())


# -- headers and addresses ------------------------------------------------------

atoms = st.text("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
dot_atoms = st.lists(atoms, min_size=1, max_size=3).map(".".join)
phrases = st.lists(atoms, min_size=1, max_size=3)


@FUZZ
@given(
    st.lists(
        st.tuples(st.none() | phrases | st.text(min_size=1, max_size=8), dot_atoms, dot_atoms),
        max_size=4,
    )
)
def test_addresses_parse_back(addresses: list[tuple[list[str] | str | None, str, str]]) -> None:
    """``Name <local@domain>`` lists written plainly come back as IMAP address structures."""
    written = []
    expected: list[list[bytes | None]] = []
    for name, local, domain in addresses:
        if name is None:
            written.append(f"{local}@{domain}")
            shown = None
        elif isinstance(name, list):
            written.append(f"{' '.join(name)} <{local}@{domain}>")
            shown = " ".join(name).encode()
        else:
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            written.append(f'"{escaped}" <{local}@{domain}>')
            shown = name.encode()
        expected.append([shown, None, local.encode(), domain.encode()])
    assert parse_addresses(", ".join(written).encode()) == expected


@FUZZ
@given(
    st.binary(max_size=80)
    | st.lists(st.sampled_from(list(b'<>@,;:"()\\ \t\r\nab')), max_size=40).map(bytes)
)
@example(b'"\\')
@example(b"(\\")
@example(b"g:<a@b>;;")
def test_address_lists_never_raise(value: bytes) -> None:
    for address in parse_addresses(value):
        assert isinstance(address, list) and len(address) == 4
    parse_content_value(value)


# -- the IMAP view of a header and the domain's agree ----------------------------

header_lines = st.lists(
    st.sampled_from(
        [
            b"Subject: [2025-0000138] ok",
            b"Subject: evil",
            b" Subject: folded",
            b"\tx",
            b"\x0bSubject: vt",
            b"\x0cFrom: ff",
            b"garbage",
            b"Sub ject: s",
            b"Subject : sp",
            b"From: a@b",
            b"X-\xc3\xa9: u",
            b": empty",
            b"\x7fTo: del",
            b"To:",
        ]
    )
    | st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b),
    max_size=10,
)


@FUZZ
@given(header_lines)
# Regressions: ENVELOPE showed "evil" as the subject of a message the gateway
# had checked and routed as "[2025-0000138] ok".
@example([b"garbage", b" Subject: evil", b"Subject: [2025-0000138] ok"])
@example([b"\x0bSubject: evil", b"Subject: [2025-0000138] ok"])
@example([b"", b"Subject: [2025-0000138] ok"])  # a blank first line: no header at all
def test_imap_and_domain_read_the_same_fields(lines: list[bytes]) -> None:
    """What the gateway checked and routed on (palais.mailbox.message) is what a
    client is shown (ENVELOPE, HEADER.FIELDS): the same fields, in the same number.
    Messages are stored with CRLF and no bare CR, so only those are generated."""
    data = b"".join(line + b"\r\n" for line in lines) + b"\r\nbody\r\n"
    root = parse_message(data)
    imap_names: dict[str, int] = {}
    for f in root.fields:
        imap_names[f.name] = imap_names.get(f.name, 0) + 1
    domain = message_header_fields(data[: header_size(data)])
    assert imap_names == {name: len(values) for name, values in domain.items()}
    for name, values in domain.items():
        shown = [f.value.decode("utf-8", "replace") for f in root.fields if f.name == name]
        assert shown == values
