"""`palais client` as a lawyer runs it, against a running instance.

A process each took seconds: most cases run the same entry point in the
test's process (``client``); a search and a sending run as processes of
their own, as the lawyer runs them (``client_process``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.instance import Instance, free_base
from tests.mailbox import court_samples as samples
from tests.mailbox.court_samples import PDF, REMOVE, changed


def _environment(instance: Instance, who: str, env: dict[str, str]) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        PALAIS_CERT=str(instance.cert(who)),
        PALAIS_KEY=str(instance.key(who)),
        PALAIS_CA=str(instance.ca),
        PALAIS_HOST="localhost",
        PALAIS_PORT=str(instance.port("smtps")),
        PALAIS_HTTPS_PORT=str(instance.port("https")),
    )
    environment.update(env)
    return environment


def client(
    instance: Instance, *args: str, who: str = "avocat1", **env: str
) -> subprocess.CompletedProcess[str]:
    """``palais client ARGS`` run in this process, its environment as a process's."""
    from palais.cli import main

    argv = ["client", *args]
    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(_environment(instance, who, env))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exit:  # argparse's usage errors
                status = int(exit.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


def client_process(
    instance: Instance, *args: str, who: str = "avocat1", **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m palais client ARGS`` in a process of its own."""
    environment = _environment(instance, who, env)
    return subprocess.run(
        [sys.executable, "-m", "palais", "client", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _file(tmp_path: Path, name: str, doc: dict[str, Any] | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return str(path)


def test_juridictions_by_three_letters(instance: Instance) -> None:
    done = client_process(instance, "juridictions", "Saint-Éti")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["CPH-SAINT-ETIENNE", "TJ-SAINT-ETIENNE"]
    assert "saisines: saisines@cph-saint-etienne.juridictions.palais.test" in lines[0]
    done = client(instance, "juridictions", "bor", "--type", "TJ", "--json")
    assert [j["code"] for j in json.loads(done.stdout)] == ["TJ-BORDEAUX"]


def test_juridictions_wants_three_letters(instance: Instance) -> None:
    done = client(instance, "juridictions", "bo")
    assert done.returncode == 1
    assert done.stderr == (
        "palais client: refusé par le serveur (400) : Saisissez au moins 3 lettres de la ville\n"
    )


def test_a_bad_certificate_file_is_named(instance: Instance, tmp_path: Path) -> None:
    bad = _file(tmp_path, "bad.pem", b"not a certificate")
    done = client(instance, "juridictions", "bor", PALAIS_CERT=bad)
    assert done.returncode == 2
    assert done.stderr.startswith(f"palais client: certificat ou clé illisible : {bad}")
    done = client(instance, "--cert", str(tmp_path / "missing.pem"), "juridictions", "bor")
    assert done.returncode == 2 and "missing.pem" in done.stderr


def test_an_unreachable_gateway_is_said(instance: Instance) -> None:
    closed = str(free_base() + 1)
    done = client(instance, "juridictions", "bor", "--https-port", closed)
    assert done.returncode == 3
    assert done.stderr.startswith(f"palais client: serveur injoignable : localhost:{closed}")


def test_a_certificate_the_gateway_refuses_is_said(instance: Instance) -> None:
    # A certificate from a CA the gateway does not trust: the handshake fails.
    done = client(instance, "juridictions", "bor", who="stranger")
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("palais client: connexion TLS refusée par localhost:")


def test_saisine_validate(instance: Instance, tmp_path: Path) -> None:
    good = _file(tmp_path, "saisine.json", samples.saisine())
    done = client(instance, "saisine", "validate", good)
    assert (done.returncode, done.stdout) == (0, f"{good} : valide\n")
    doc = changed(changed(samples.saisine(), "actors.0.given_name", REMOVE), "section", REMOVE)
    bad = _file(tmp_path, "bad.json", doc)
    done = client(instance, "saisine", "validate", bad)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "actors[0].given_name: champ obligatoire (personne physique)",
        "section: champ obligatoire devant un conseil de prud'hommes",
    ]
    assert done.stderr == f"{bad} : 2 erreur(s)\n"


def test_saisine_validate_with_its_attachments_and_slots(
    instance: Instance, tmp_path: Path
) -> None:
    booked = _file(tmp_path, "saisine.json", samples.saisine(booking=True))
    summons = _file(tmp_path, "projet-assignation.pdf", PDF)
    slots = _file(tmp_path, "slots.json", samples.hearing_slots())
    assert client(instance, "saisine", "validate", booked, summons).returncode == 0
    assert (
        client(instance, "saisine", "validate", booked, summons, "--slots", slots).returncode == 0
    )
    done = client(instance, "saisine", "validate", booked)
    assert done.returncode == 1 and done.stdout.startswith("date_booking.draft_summons: ")
    other = changed(samples.hearing_slots(), "slots.0.id", "autre")
    done = client(
        instance,
        "saisine",
        "validate",
        booked,
        summons,
        "--slots",
        _file(tmp_path, "o.json", other),
    )
    assert done.returncode == 1 and done.stdout.startswith("date_booking.slot_id: ")


def test_an_invalid_saisine_is_not_sent(instance: Instance, tmp_path: Path) -> None:
    bad = _file(tmp_path, "bad.json", changed(samples.saisine(), "service", REMOVE))
    # Not even a connection: the port given is closed.
    done = client(instance, "saisine", "send", bad, PALAIS_PORT=str(free_base() + 1))
    assert done.returncode == 1
    assert done.stdout == "service: champ obligatoire\n"
    assert "rien n'est envoyé" in done.stderr


def test_a_saisine_is_sent_with_its_attachments(instance: Instance, tmp_path: Path) -> None:
    saisine = _file(tmp_path, "saisine.json", samples.saisine())
    annex = _file(tmp_path, "piece-1.pdf", PDF * 4000)
    number = instance.dossier["number"]
    done = client_process(
        instance,
        "saisine",
        "send",
        saisine,
        annex,
        "--to",
        instance.dossier["address"],
        "--subject",
        f"[{number}] saisine par palais client",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"saisine envoyée à {instance.dossier['address']} : 2.0.0 ")
    assert done.stderr.startswith("envoi : 100 % (") and done.stderr.endswith(" octets)\n")
    imap = instance.imap("avocat1")
    try:
        imap.select('"Envoy&AOk-s"', readonly=True)
        _, found = imap.search(None, "SUBJECT", '"saisine par palais client"')
        (uid,) = found[0].split()
        _, data = imap.fetch(uid, "(BODYSTRUCTURE)")
    finally:
        imap.logout()
    structure = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
    assert '"application" "vnd.palais.saisine+json"' in structure.lower()
    assert '"piece-1.pdf"' in structure


def test_a_saisine_goes_to_the_juridiction_s_address(instance: Instance, tmp_path: Path) -> None:
    # The directory gives the address; the gateway files the saisine in the
    # lawyer's Saisines/Envoyées (and the court system's INBOX).
    def sent() -> int:
        imap = instance.imap("avocat1")
        try:
            status, count = imap.select('"Saisines/Envoy&AOk-es"', readonly=True)
        finally:
            imap.logout()
        assert status == "OK"
        return int(count[0] or 0)

    before = sent()
    saisine = _file(tmp_path, "saisine.json", samples.saisine())
    done = client(instance, "saisine", "send", saisine)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "saisine envoyée à saisines@cph-bordeaux.juridictions.palais.test"
    )
    assert sent() == before + 1


def test_a_constitution_is_sent_with_its_pdf(instance: Instance, tmp_path: Path) -> None:
    constitution = _file(tmp_path, "constitution.json", samples.constitution())
    done = client(instance, "constitution", "send", constitution)
    assert done.returncode == 1
    assert done.stdout == "document: la constitution n'est pas jointe au message\n"
    pdf = _file(tmp_path, "constitution.pdf", PDF)
    done = client(
        instance, "constitution", "send", constitution, pdf, "--to", instance.dossier["address"]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("constitution envoyée à ")
