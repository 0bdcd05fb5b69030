"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 2.2), and
the THREAD response's nested lists.

Both take the matching messages in mailbox order with their facts
(``palais.gateway.imap.sorting.SortFacts``) and return a forest of
``Node``; a node without a message is a dummy (a message referred to but
not among those threaded). Named ``threads`` so as not to shadow the
standard library's ``threading``.
"""

from __future__ import annotations

from collections.abc import Sequence

from palais.gateway.imap.sorting import FactTable, SortFacts

__all__ = ["Node", "format_threads", "ordered_subject", "references"]


class Node:
    __slots__ = ("children", "number", "parent", "position", "sent")

    def __init__(self, number: int | None = None, sent: float = 0.0, position: int = 0) -> None:
        self.number = number  # the UID or sequence number shown; None: a dummy
        self.sent = sent
        self.position = position  # in the mailbox: breaks ties between equal dates
        self.parent: Node | None = None
        self.children: list[Node] = []

    def add(self, child: Node) -> None:
        child.parent = self
        self.children.append(child)

    def detach(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def is_above(self, other: Node) -> bool:
        """Whether this node is ``other`` or one of its ancestors."""
        node: Node | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def order_key(self) -> tuple[float, int]:
        """Sent date then mailbox order; a dummy sorts as its first child."""
        node = self
        while node.number is None and node.children:
            node = node.children[0]
        return (node.sent, node.position)


def _sort_siblings(nodes: list[Node]) -> None:
    nodes.sort(key=Node.order_key)


def ordered_subject(uids: Sequence[int], facts: FactTable, numbers: Sequence[int]) -> list[Node]:
    """Messages grouped by base subject; each group's first (by sent date) on
    top with the others as its children; groups by their first's date."""
    by_subject: dict[bytes, list[Node]] = {}
    for position, (uid, number) in enumerate(zip(uids, numbers, strict=True)):
        f = facts[uid]
        by_subject.setdefault(f.subject, []).append(Node(number, f.sent, position))
    roots: list[Node] = []
    for group in by_subject.values():
        _sort_siblings(group)
        top = group[0]
        for other in group[1:]:
            top.add(other)
        roots.append(top)
    _sort_siblings(roots)
    return roots


def references(uids: Sequence[int], facts: FactTable, numbers: Sequence[int]) -> list[Node]:
    """The REFERENCES algorithm, steps 1 to 7."""
    containers: dict[str, Node] = {}
    messages: list[tuple[Node, SortFacts]] = []

    def container(message_id: str) -> Node:
        node = containers.get(message_id)
        if node is None:
            node = containers[message_id] = Node()
        return node

    # (1) Containers: one per message, the first holding a Message-ID keeps it;
    # a repeated or missing one is unique to its message.
    for position, (uid, number) in enumerate(zip(uids, numbers, strict=True)):
        f = facts[uid]
        node: Node | None = None
        if f.message_id is not None:
            kept = containers.get(f.message_id)
            if kept is None or kept.number is None:
                node = container(f.message_id)
                node.number, node.sent, node.position = number, f.sent, position
        if node is None:
            node = Node(number, f.sent, position)
        messages.append((node, f))
    for node, f in messages:
        # (1A) The references chained parent to child, links already made kept.
        parent: Node | None = None
        for ref in f.references:
            child = container(ref)
            if parent is not None and child.parent is None and not child.is_above(parent):
                parent.add(child)
            parent = child
        # (1B) The last reference is the message's parent: its own references win.
        if parent is not None and node.is_above(parent):
            parent = None
        if node.parent is not parent:
            node.detach()
            if parent is not None:
                parent.add(node)
    # (2) The messages without a parent are the root's children.
    everyone = {id(n): n for n in containers.values()}
    everyone.update((id(n), n) for n, _ in messages)
    roots = [n for n in everyone.values() if n.parent is None]
    # (3) Dummies pruned.
    roots = _prune(roots)
    # (4) The root's children by sent date (a dummy: its children sorted, the first).
    for node in roots:
        if node.number is None:
            _sort_siblings(node.children)
    _sort_siblings(roots)
    # (5) The subject table.
    table: dict[bytes, Node] = {}
    for node in roots:
        subject, reply = _subject_of(node, facts, uids)
        if not subject:
            continue
        held = table.get(subject)
        if held is None or (
            held.number is not None
            and (node.number is None or (_subject_of(held, facts, uids)[1] and not reply))
        ):
            table[subject] = node
    # (6) Top-level messages of one subject gathered.
    top_level: list[Node] = []
    for node in roots:
        subject, reply = _subject_of(node, facts, uids)
        held = table.get(subject) if subject else None
        if held is None or held is node:
            top_level.append(node)
            continue
        if held.number is None and node.number is None:
            for child in list(node.children):
                child.parent = None
                held.add(child)
            node.children = []
        elif held.number is None or (reply and not _subject_of(held, facts, uids)[1]):
            held.add(node)
        else:
            dummy = Node()
            at = top_level.index(held) if held in top_level else -1
            held.parent = None
            dummy.add(held)
            dummy.add(node)
            table[subject] = dummy
            if at >= 0:
                top_level[at] = dummy
            else:
                _replace_later(roots, held, dummy)
    # (7) Siblings by sent date, deepest first.
    _sort_tree(top_level)
    return top_level


def _replace_later(roots: list[Node], old: Node, new: Node) -> None:
    for i, node in enumerate(roots):
        if node is old:
            roots[i] = new
            return


def _subject_of(node: Node, facts: FactTable, uids: Sequence[int]) -> tuple[bytes, bool]:
    """The base subject of a top-level node (a dummy: of its first child)."""
    while node.number is None and node.children:
        node = node.children[0]
    if node.number is None:
        return b"", False
    f = facts[uids[node.position]]
    return f.subject, f.reply


def _prune(roots: list[Node]) -> list[Node]:
    """Step 3: dummies without children dropped, the others replaced by their
    children; at the top, only a dummy with one child is."""
    order: list[Node] = []
    stack = list(roots)
    while stack:  # parents before their children; walked backwards below
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):
        node.children = _promoted(node.children, top=False)
        for child in node.children:
            child.parent = node
    out = _promoted(roots, top=True)
    for node in out:
        node.parent = None
    return out


def _promoted(nodes: list[Node], *, top: bool) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        if node.number is not None:
            out.append(node)
        elif not node.children:
            continue
        elif not top or len(node.children) == 1:
            out.extend(node.children)
        else:
            out.append(node)
    return out


def _sort_tree(roots: list[Node]) -> None:
    # Post-order: children sorted before their parents' siblings.
    stack: list[tuple[Node, bool]] = [(n, False) for n in roots]
    while stack:
        node, done = stack.pop()
        if done:
            _sort_siblings(node.children)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in node.children)
    _sort_siblings(roots)


def format_threads(roots: Sequence[Node]) -> bytes:
    """``(3 6 (4 23)(44 7 96))``: a chain in one list, each branch of several
    children in a list of its own; a dummy shows only its children's lists."""
    out: list[bytes] = []
    for root in roots:
        out.append(b"(")
        _members(root, out)
        out.append(b")")
    return b"".join(out)


def _members(node: Node, out: list[bytes]) -> None:
    # Iterative along chains (a long thread is a long chain), recursive only
    # at branches, whose depth the stack below bounds.
    stack: list[Node | bytes] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        current: Node | None = item
        first = True
        while current is not None:
            if current.number is not None:
                out.append(b"%d" % current.number if first else b" %d" % current.number)
                first = False
            children = current.children
            if len(children) == 1 and current.number is not None:
                current = children[0]
                continue
            if children:
                if current.number is not None:
                    out.append(b" ")
                # Branches in order: pushed reversed, each closed after its members.
                for child in reversed(children):
                    stack.append(b")")
                    stack.append(child)
                    stack.append(b"(")
            current = None
