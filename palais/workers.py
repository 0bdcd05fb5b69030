"""`palais serve --workers N`: N gateway processes on one machine, each a node.

Python runs one core per process; a machine of several cores runs several
processes. Each worker is a whole ``palais serve`` with its own node id,
binding the same ports with SO_REUSEPORT (the kernel spreads connections
over them), and they share nothing but the PostgreSQL database, exactly as
nodes on several machines do. On SQLite they would share one file that one
writer owns: refused.

This parent only supervises: it says ``palais: ready`` once every worker
has, passes SIGTERM/SIGINT on, and starts a worker again if one dies (a
crash of one worker costs its own connections, which clients open again on
the others).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

__all__ = ["run_workers", "worker_node"]

_READY = "palais: ready"
_STOP_TIMEOUT = 30.0
_RESTART_DELAY = 1.0


def worker_node(base: str, index: int) -> str:
    return f"{base}-w{index}"


class _Worker:
    def __init__(self, instance: Path, node: str) -> None:
        self.instance = instance
        self.node = node
        self.ready = threading.Event()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.ready.clear()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-P",  # not the working directory's `palais`, if it has one
                "-m",
                "palais",
                "serve",
                str(self.instance),
                "--node",
                self.node,
                "--reuse-port",
            ],
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=_same_code(),
        )
        threading.Thread(target=self._relay, args=(self.process,), daemon=True).start()

    def _relay(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == _READY:
                self.ready.set()
            else:
                sys.stdout.write(line)
                sys.stdout.flush()


def run_workers(instance: Path, base_node: str, count: int) -> int:
    """Run ``count`` workers until SIGTERM or SIGINT; the exit status."""
    workers = [_Worker(instance, worker_node(base_node, i + 1)) for i in range(count)]
    stopping = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for w in workers:
        w.start()
    announced = False
    status = 0
    while not stopping.is_set():
        for w in workers:
            assert w.process is not None
            code = w.process.poll()
            if code is None:
                continue
            if not announced:
                # A worker that cannot start (bad schema, port taken, key
                # missing) said why on stderr: the others would fail alike.
                print(
                    f"palais serve: worker {w.node} exited with status {code} while starting",
                    file=sys.stderr,
                )
                stopping.set()
                status = 1
                break
            print(
                f"palais serve: worker {w.node} exited with status {code}; starting it again",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(_RESTART_DELAY)
            w.start()
        if not announced and all(w.ready.is_set() for w in workers):
            print(_READY, flush=True)
            announced = True
        stopping.wait(0.1)
    for w in workers:
        if w.process is not None and w.process.poll() is None:
            w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    for w in workers:
        if w.process is None:
            continue
        try:
            w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()
    return status


def _same_code() -> dict[str, str]:
    """The environment of a worker that runs the supervisor's own Palais:
    the directory it was imported from comes first on the worker's path
    (``python -m`` would otherwise put the working directory there, and a
    checkout of another version in it would answer for some workers)."""
    import palais

    home = str(Path(palais.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([home, *filter(None, [env.get("PYTHONPATH")])])
    return env
