"""A test cluster: nodes made by `palais init --database` and `palais node add` on one
PostgreSQL (tests.postgres_server), and HAProxy in TCP mode in front of them.

Every node is a real `palais serve` process (one of them with `--workers 2`);
HAProxy passes TLS through untouched, so the client's certificate reaches
the node it lands on, as in production.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from palais.instance import PORT_OFFSETS
from tests.e2e.instance import Instance

# Nodes pick trust changes up this often (the default is 5 s).
CLUSTER_CONFIG = """
[trust]
watch_interval = 0.5
crl_fetch = false
"""
START_TIMEOUT = 90.0


def palais(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palais", *args], capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Node:
    """One node's directory and process (``workers`` > 1: a supervisor of that many)."""

    instance: Instance
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.instance.root

    @property
    def name(self) -> str:
        return str(self.instance.demo.get("node", "node1"))

    def start(self) -> None:
        assert self.proc is None
        log = (self.root / "serve.log").open("ab")
        argv = [sys.executable, "-m", "palais", "serve", str(self.root)]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        self.instance.log_path = self.root / "serve.log"

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited: {self.log()}")
            if "palais: ready" in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"node {self.name} did not start: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.root / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class HaProxy:
    """Debian's haproxy in TCP mode: one frontend per listener, round robin over the nodes."""

    root: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes] | None = None

    def start(self, nodes: list[Node]) -> None:
        lines = [
            "global",
            "    maxconn 4096",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 1h",
            "    timeout server 1h",
        ]
        for listener, port in self.ports.items():
            lines += [
                f"frontend {listener}",
                f"    bind 127.0.0.1:{port}",
                f"    default_backend {listener}_nodes",
                f"backend {listener}_nodes",
                "    balance roundrobin",
            ]
            for i, node in enumerate(nodes):
                # A node that stops answering is out within a second; it is a
                # TCP check: TLS and the client's certificate go to the node.
                lines.append(
                    f"    server n{i} 127.0.0.1:{node.instance.port(listener)}"
                    " check inter 300 fall 2 rise 2 on-marked-down shutdown-sessions"
                )
        cfg = self.root / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log = (self.root / "haproxy.log").open("ab")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(_listening(p) for p in self.ports.values()):
                return
            time.sleep(0.05)
        raise RuntimeError("haproxy did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Cluster:
    nodes: list[Node]
    front: Instance  # the demo identities, with HAProxy's ports
    haproxy: HaProxy | None = None
    extra: list[Node] = field(default_factory=list)

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for node in self.nodes:
            node.stop()


def spaced_bases(count: int) -> list[int]:
    """Free base ports whose listener ranges (base+25 to base+993) do not overlap:
    chosen before any node binds, so that one cannot take another's."""
    bases: list[int] = []
    while len(bases) < count:
        # Below the kernel's ephemeral ports (32768 up): the nodes' own
        # connections to PostgreSQL would otherwise hold a listener's port.
        base = random.randrange(10000, 31700, 7)
        if all(abs(base - other) > 1000 for other in bases) and _free(base):
            bases.append(base)
    return bases


def _free(base: int) -> bool:
    for offset in PORT_OFFSETS.values():
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + offset))
            except OSError:
                return False
    return True


def make_nodes(root: Path, url: str, count: int, bases: list[int]) -> list[Node]:
    """`palais init --database` once, then `palais node add` for the others."""
    first = root / "node1"
    done = palais("init", str(first), "--ports", str(bases[0]), "--database", url)
    assert done.returncode == 0, done.stderr
    with (first / "palais.toml").open("a", encoding="utf-8") as f:
        f.write(CLUSTER_CONFIG)
    dirs = [first]
    for i in range(2, count + 1):
        target = root / f"node{i}"
        done = palais("node", "add", str(first), str(target), "--ports", str(bases[i - 1]))
        assert done.returncode == 0, done.stderr
        dirs.append(target)
    return [
        Node(Instance(d, json.loads((d / "demo.json").read_text(encoding="utf-8")))) for d in dirs
    ]


@contextlib.contextmanager
def running(nodes: list[Node]) -> Iterator[list[Node]]:
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def front_of(nodes: list[Node], root: Path, base: int) -> tuple[Instance, HaProxy]:
    """HAProxy's ports as an Instance (demo identities of the cluster, files of node 1)."""
    ports = {"smtps": base + 465, "imaps": base + 993, "https": base + 443}
    demo = dict(nodes[0].instance.demo)
    demo["ports"] = {**demo["ports"], **ports}
    (root / "haproxy").mkdir(exist_ok=True)
    return Instance(nodes[0].root, demo), HaProxy(root / "haproxy", ports)


def read_until(imap: imaplib.IMAP4_SSL, want: bytes, timeout: float) -> list[bytes]:
    """Untagged lines of an IDLE session until one equal to ``want``."""
    assert imap.sock is not None
    lines: list[bytes] = []
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {want!r} within {timeout}s; got {lines}")
        imap.sock.settimeout(left)
        line = imap.readline()
        if not line:
            raise AssertionError(f"connection closed waiting for {want!r}; got {lines}")
        lines.append(line)
        if line == want:
            return lines


def idle(imap: imaplib.IMAP4_SSL) -> bytes:
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    assert imap.readline().startswith(b"+")
    assert isinstance(tag, bytes)
    return tag


def have_haproxy() -> bool:
    return shutil.which("haproxy") is not None
