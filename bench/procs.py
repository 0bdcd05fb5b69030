"""Process-tree memory and CPU accounting from /proc (Linux only, no psutil)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_HZ = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces/parentheses
        rest = stat[stat.rfind(")") + 2 :].split()
        ppid = int(rest[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree(roots: list[int]) -> list[int]:
    """The given PIDs and all their descendants that still exist."""
    children = _children_map()
    seen: list[int] = []
    todo = [r for r in roots if Path(f"/proc/{r}").exists()]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


@dataclass
class MemorySample:
    processes: int
    rss_kib: int
    pss_kib: int
    by_name: dict[str, int]  # process count per command name

    def as_dict(self) -> dict[str, object]:
        return {
            "processes": self.processes,
            "rss_mib": round(self.rss_kib / 1024, 2),
            "pss_mib": round(self.pss_kib / 1024, 2),
            "by_name": self.by_name,
        }


def memory(roots: list[int], exclude: frozenset[str] | set[str] = frozenset()) -> MemorySample:
    """RSS/PSS summed over the process trees of ``roots``, minus processes named in ``exclude``."""
    pids = [p for p in tree(roots) if _comm(p) not in exclude]
    rss = sum(_status_kib(p, "VmRSS") for p in pids)
    pss = sum(_pss_kib(p) for p in pids)
    names = Counter(_comm(p) for p in pids)
    return MemorySample(len(pids), rss, pss, dict(sorted(names.items())))


class CpuMeter:
    """Whole-machine busy share and this process's own CPU over an interval."""

    def __init__(self) -> None:
        self._t0 = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float]:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        vals = [int(x) for x in fields]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        total = sum(vals[:8])
        t = os.times()
        return total / _HZ, idle / _HZ, t.user + t.system

    def stop(self, wall_s: float) -> dict[str, float | None]:
        total1, idle1, own1 = self._snapshot()
        total0, idle0, own0 = self._t0
        dt = total1 - total0
        busy = None if dt <= 0 else round(100.0 * (1 - (idle1 - idle0) / dt), 1)
        own = None if wall_s <= 0 else round(100.0 * (own1 - own0) / wall_s, 1)
        return {"machine_cpu_busy_pct": busy, "client_cpu_pct": own}


def cpu_busy_sample(seconds: float = 0.5) -> float | None:
    """Whole-machine CPU busy share over a short idle interval (detects other load)."""
    import time as _time

    meter = CpuMeter()
    _time.sleep(seconds)
    return meter.stop(seconds)["machine_cpu_busy_pct"]


# A machine doing nothing but the bench's own idle connections stays under this.
QUIET_PCT = 20.0


def settle(timeout: float, seconds: float = 0.5) -> float | None:
    """Wait (bounded) until the machine is quiet: a target just started still
    spends a second or two of CPU once its ports answer (worker processes
    spawned, caches filled; twice that with two workers), and a workload
    started meanwhile measures that too. The busy share of the last sample
    (above ``QUIET_PCT`` if the time ran out)."""
    import time as _time

    deadline = _time.monotonic() + timeout
    while True:
        busy = cpu_busy_sample(seconds)
        if busy is None or busy < QUIET_PCT or _time.monotonic() >= deadline:
            return busy


# -- which process holds a TCP connection (palais serve --workers: SO_REUSEPORT) -------------------
def parse_proc_net_tcp(text: str) -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of each socket in /proc/net/tcp{,6} text."""
    out: list[tuple[int, int, int]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            out.append((local, remote, int(fields[9])))
        except (IndexError, ValueError):
            continue
    return out


def socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server end (local ``server_port``, peer ``client_port``)."""
    for name in ("tcp", "tcp6"):
        try:
            text = Path(f"/proc/net/{name}").read_text()
        except OSError:
            continue
        for local, remote, inode in parse_proc_net_tcp(text):
            # inode 0: still in the accept queue, not yet any process's.
            if local == server_port and remote == client_port and inode:
                return inode
    return None


def node_from_cmdline(argv: list[str]) -> str | None:
    """The value of ``--node`` in a worker's command line (``palais serve DIR --node X``)."""
    for i, arg in enumerate(argv):
        if arg == "--node" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--node="):
            return arg.split("=", 1)[1]
    return None


def _holds(pid: int, link: str) -> bool:
    try:
        fds = os.scandir(f"/proc/{pid}/fd")
    except OSError:
        return False
    with fds:
        for fd in fds:
            try:
                if os.readlink(fd.path) == link:
                    return True
            except OSError:
                continue
    return False


def connection_holder(parent: int, server_port: int, client_port: int) -> str | None:
    """Which direct child of ``parent`` holds the server end of a connection:
    its ``--node`` (else ``pid N``); None if not found (same-machine /proc only)."""
    inode = socket_inode(server_port, client_port)
    if inode is None:
        return None
    link = f"socket:[{inode}]"
    for pid in _children_map().get(parent, []):
        if _holds(pid, link):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                argv = ""
            return node_from_cmdline(argv.split("\0")) or f"pid {pid}"
    return None
