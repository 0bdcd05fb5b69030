"""The gateway's HTTPS listener, reached with curl like an operator would."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.e2e.instance import Instance

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def curl(inst: Instance, path: str, who: str | None = None) -> subprocess.CompletedProcess[str]:
    args = ["curl", "-sS", "-w", "\\n%{http_code}", "--cacert", str(inst.ca)]
    if who:
        args += ["--cert", str(inst.cert(who)), "--key", str(inst.key(who))]
    return subprocess.run(
        [*args, f"https://localhost:{inst.port('https')}{path}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_health_without_certificate(instance: Instance) -> None:
    out = curl(instance, "/health")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200" and '"ok"' in body


def test_metrics_for_operators_only(instance: Instance) -> None:
    assert curl(instance, "/metrics").stdout.endswith("401")
    assert curl(instance, "/metrics", "avocat1").stdout.endswith("403")
    out = curl(instance, "/metrics", "admin1")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200"
    assert "palais_up 1" in body
    assert "palais_smtp_smtps_accepted_total" in body
    assert "palais_writer_batches_total" in body


def test_thunderbird_autoconfig(instance: Instance) -> None:
    out = curl(instance, "/.well-known/autoconfig/mail/config-v1.1.xml")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200"
    assert str(instance.port("imaps")) in body and "TLS-client-cert" in body


def test_gateway_runs_on_uvloop_by_default(instance: Instance) -> None:
    # The shared instance keeps palais init's default; test_durability runs one on asyncio.
    assert "loop=uvloop" in instance.read_log()
