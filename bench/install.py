"""Install what the peer needs from Debian when it is missing.

Only ever installs these packages: postfix, dovecot-imapd, dovecot-lmtpd
(dovecot-core comes with them), and only when one of their programs is
missing. The system's own Postfix/Dovecot instances are neither configured
nor started: Postfix is preseeded with "No configuration", and if the host
has no /usr/sbin/policy-rc.d, a temporary one (exit 101) keeps the package
scripts from starting services on ports 25/143/993 during the install.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PACKAGES = ["postfix", "dovecot-imapd", "dovecot-lmtpd"]
MAIL_USER = "palaisbench"  # owns the peer's Maildirs (Dovecot refuses uid 0 for mail)

REQUIRED = {
    "postfix": "/usr/sbin/postfix",
    "postconf": "/usr/sbin/postconf",
    "dovecot": "/usr/sbin/dovecot",
    "dovecot imap": "/usr/lib/dovecot/imap",
    "dovecot lmtp": "/usr/lib/dovecot/lmtp",
}


def missing_programs() -> list[str]:
    return [name for name, path in REQUIRED.items() if not Path(path).exists()]


def _run(
    cmd: list[str],
    log: Callable[[str], None],
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    log(f"  $ {' '.join(cmd)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ensure_peer_packages(log: Callable[[str], None] = print, allow_install: bool = True) -> None:
    """Raise RuntimeError with a readable reason if the peer cannot be installed."""
    missing = missing_programs()
    if not missing:
        return
    if not allow_install:
        raise RuntimeError(
            f"missing {', '.join(missing)}; install: apt-get install {' '.join(PACKAGES)}"
        )
    if os.geteuid() != 0:
        raise RuntimeError(
            f"missing {', '.join(missing)} and not root; "
            f"run: sudo apt-get install {' '.join(PACKAGES)}"
        )
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"missing {', '.join(missing)} and no apt-get on this system")
    log(f"installing {' '.join(PACKAGES)} (missing: {', '.join(missing)})")
    subprocess.run(
        ["debconf-set-selections"],
        input="postfix postfix/main_mailer_type select No configuration\n",
        text=True,
        capture_output=True,
        check=False,
    )
    policy = Path("/usr/sbin/policy-rc.d")
    temp_policy = not policy.exists()
    if temp_policy:
        policy.write_text("#!/bin/sh\n# temporary, written by palais bench/install.py\nexit 101\n")
        policy.chmod(0o755)
    try:
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
        res = _run(cmd, log)
        if res.returncode != 0:
            _run(["apt-get", "update"], log)
            res = _run(cmd, log)
        if res.returncode != 0:
            raise RuntimeError("apt-get install failed: " + (res.stderr or res.stdout)[-800:])
    finally:
        if temp_policy:
            policy.unlink(missing_ok=True)
    still = missing_programs()
    if still:
        raise RuntimeError(f"still missing after install: {', '.join(still)}")


def ensure_mail_user(log: Callable[[str], None] = print) -> tuple[int, int]:
    """uid/gid of the unprivileged user that owns the peer's mail (created if needed)."""
    try:
        pw = pwd.getpwnam(MAIL_USER)
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise RuntimeError(f"system user {MAIL_USER!r} missing and not root to create it")
    log(f"creating system user {MAIL_USER} (owner of the benchmark Maildirs)")
    res = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            MAIL_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"useradd {MAIL_USER} failed: {res.stderr.strip()}")
    pw = pwd.getpwnam(MAIL_USER)
    return pw.pw_uid, pw.pw_gid
