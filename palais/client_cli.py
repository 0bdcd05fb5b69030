"""``palais client``: saisines and constitutions for lawyers without a form-capable mail client.

    palais client [--cert F --key F --ca F --host H --port N --https-port N] COMMAND
      juridictions SEARCH [--type CPH|TPROX|TJ] [--json]
      saisine validate FILE [ATTACHMENTS...] [--slots SLOTS.json]
      saisine send FILE [ATTACHMENTS...] [--to ADDRESS] [--subject TEXT]
      constitution validate FILE [ATTACHMENTS...]
      constitution send FILE [ATTACHMENTS...] [--to ADDRESS] [--subject TEXT]
      alerts show | set ADDRESS [--digest] | off
      search-dossier NUMBER | --type T --juridiction CODE [--demandeur N] [--defendeur N]

The lawyer's certificate and key files (``--cert``, ``--key``; or
``PALAIS_CERT``, ``PALAIS_KEY``) prove who they are, as their card does to
their mail client; ``--ca`` (``PALAIS_CA``) is the gateway's CA. A document
is checked here first, with the same rules as the gateway's
(``palais.mailbox.documents``); ``send`` then sends it over SMTP with mutual
TLS, as a part of its media type beside its attachments, to the
juridiction's saisine or constitution address (from the directory, over
HTTPS). Exit status: 0 done, 1 invalid or refused, 2 usage or unreadable
local file (a document, an attachment, the certificate or key), 3 the
gateway unreachable or the TLS connection refused.
"""

from __future__ import annotations

import argparse
import http.client
import json
import mimetypes
import os
import re
import smtplib
import ssl
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

from cryptography import x509
from pydantic import ValidationError

from palais.mailbox.court_events import HearingSlots
from palais.mailbox.document_context import Attached, DocumentContext
from palais.mailbox.documents import CONSTITUTION, KINDS, SAISINE

OK, INVALID, USAGE, UNREACHABLE = 0, 1, 2, 3
_ENV = {
    "cert": "PALAIS_CERT",
    "key": "PALAIS_KEY",
    "ca": "PALAIS_CA",
    "host": "PALAIS_HOST",
    "port": "PALAIS_PORT",
    "https_port": "PALAIS_HTTPS_PORT",
}
_DEFAULTS = {"host": "localhost", "port": "465", "https_port": "443"}
_CHUNK = 64 * 1024


class Failure(Exception):
    """What went wrong, said to the lawyer, and the exit status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Connection:
    host: str
    port: int  # SMTPS
    https_port: int
    context: ssl.SSLContext
    cert: Path


def _setting(args: argparse.Namespace, name: str) -> str | None:
    value = getattr(args, name, None)
    if value is None:
        value = os.environ.get(_ENV[name]) or _DEFAULTS.get(name)
    return None if value is None else str(value)


def _connection(args: argparse.Namespace) -> Connection:
    cert, key, ca = (_setting(args, n) for n in ("cert", "key", "ca"))
    missing = [f"--{n} ({_ENV[n]})" for n, v in (("cert", cert), ("key", key)) if not v]
    if missing:
        raise Failure(USAGE, f"il manque {' et '.join(missing)}")
    assert cert is not None and key is not None
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise Failure(USAGE, f"autorité de certification illisible : {ca} ({_why(e)})") from e
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise Failure(USAGE, f"certificat ou clé illisible : {cert}, {key} ({_why(e)})") from e
    host = _setting(args, "host") or "localhost"
    try:
        port = int(_setting(args, "port") or 0)
        https_port = int(_setting(args, "https_port") or 0)
    except ValueError:
        raise Failure(USAGE, "un port est un nombre") from None
    return Connection(host, port, https_port, context, Path(cert))


def _why(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or error.strerror or type(error).__name__
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return type(error).__name__


# -- the directory, over HTTPS --------------------------------------------------------------


def https_json(
    conn: Connection, method: str, path: str, body: dict[str, str] | None = None
) -> dict[str, Any]:
    """One call to the gateway's HTTPS API with the card; its JSON object.
    Unreachable or refused: a ``Failure`` in words (with the server's
    ``details`` lines when it gives some)."""
    client = http.client.HTTPSConnection(
        conn.host, conn.https_port, context=conn.context, timeout=30
    )
    where = _where(conn, True)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        client.request(method, path, body=data, headers=headers)
        response = client.getresponse()
        raw = response.read()
    except ssl.SSLError as e:
        raise Failure(UNREACHABLE, f"connexion TLS refusée par {where} ({_why(e)})") from e
    except OSError as e:
        raise Failure(UNREACHABLE, f"serveur injoignable : {where} ({_why(e)})") from e
    finally:
        client.close()
    try:
        answer: Any = json.loads(raw)
    except ValueError:
        answer = None
    if response.status != 200:
        said = answer.get("error") if isinstance(answer, dict) else None
        details = answer.get("details") if isinstance(answer, dict) else None
        text = f"refusé par le serveur ({response.status}) : {said or repr(raw[:200])}"
        if isinstance(details, list) and details:
            text += "\n" + "\n".join(f"  {d}" for d in details)
        raise Failure(INVALID, text)
    if not isinstance(answer, dict):
        raise Failure(UNREACHABLE, "réponse inattendue du serveur")
    return answer


def _api(conn: Connection, query: dict[str, str]) -> list[dict[str, Any]]:
    found = https_json(conn, "GET", "/api/juridictions?" + urlencode(query)).get("juridictions")
    if not isinstance(found, list):
        raise Failure(UNREACHABLE, "réponse inattendue du serveur")
    return found


def _where(conn: Connection, https: bool = False) -> str:
    return f"{conn.host}:{conn.https_port if https else conn.port}"


def cmd_juridictions(args: argparse.Namespace, out: TextIO) -> int:
    conn = _connection(args)
    query = {"ville": args.search}
    if args.type:
        query["type"] = args.type
    found = _api(conn, query)
    if args.json:
        print(json.dumps(found, ensure_ascii=False, indent=2), file=out)
        return OK
    for j in found:
        print(
            f"{j['code']}\t{j['type']}\t{j['city']}\t{j['name']}\t"
            f"saisines: {j['saisine_address']}\tconstitutions: {j['constitution_address']}",
            file=out,
        )
    if not found:
        print(f"aucune juridiction pour « {args.search} »", file=sys.stderr)
    return OK


# -- documents ------------------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise Failure(USAGE, f"{what} illisible : {path} ({_why(e)})") from e


def _media_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


def _attachments(paths: Sequence[str]) -> list[tuple[str, str, bytes]]:
    """(file name, media type, bytes) of each attachment named on the command line."""
    return [(Path(p).name, _media_type(p), _read(p, "pièce jointe")) for p in paths]


def _slots(path: str | None) -> dict[str, list[Any]] | None:
    if path is None:
        return None
    try:
        document = HearingSlots.model_validate_json(_read(path, "fichier de créneaux"))
    except ValidationError as e:
        count = e.error_count()
        raise Failure(USAGE, f"fichier de créneaux invalide : {path} ({count} erreur(s))") from e
    return {document.juridiction_code: list(document.slots)}


def _check(
    media_type: str,
    data: bytes,
    attachments: Sequence[tuple[str, str, bytes]],
    slots: dict[str, list[Any]] | None,
) -> list[str]:
    context = DocumentContext(
        slots=slots,
        attachments=tuple(Attached.of(name, kind, body) for name, kind, body in attachments),
    )
    return [str(e) for e in KINDS[media_type].errors(data, context)]


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    data = _read(args.file, "document")
    errors = _check(args.media_type, data, _attachments(args.attachments), _slots(args.slots))
    for line in errors:
        print(line, file=out)
    if errors:
        print(f"{args.file} : {len(errors)} erreur(s)", file=sys.stderr)
        return INVALID
    print(f"{args.file} : valide", file=out)
    return OK


def build_message(
    *,
    sender: str,
    recipient: str,
    subject: str,
    media_type: str,
    document: bytes,
    document_name: str,
    attachments: Sequence[tuple[str, str, bytes]],
    text: str,
) -> bytes:
    """The mail: a text part, the document as a part of its media type, the attachments."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{sender.rpartition('@')[2] or 'palais'}>"
    msg.set_content(text)
    maintype, subtype = media_type.split("/")
    msg.add_attachment(document, maintype=maintype, subtype=subtype, filename=document_name)
    for name, kind, body in attachments:
        main, sub = kind.split("/", 1)
        msg.add_attachment(body, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes(policy=SMTP)


def _sender(conn: Connection, given: str | None) -> str:
    """The lawyer's address: given, or the e-mail address their certificate carries."""
    if given:
        return given
    try:
        cert = x509.load_pem_x509_certificate(conn.cert.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = names.get_values_for_type(x509.RFC822Name)
    except (OSError, ValueError, x509.ExtensionNotFound):
        emails = []
    if not emails:
        raise Failure(USAGE, f"aucune adresse dans {conn.cert} : donnez --from")
    return str(emails[0])


def _juridiction_address(conn: Connection, code: str, field: str) -> str:
    found = _api(conn, {"code": code})
    if not found:
        raise Failure(INVALID, f"juridiction inconnue de l'annuaire : {code}")
    return str(found[0][field])


_DOT = re.compile(rb"^\.", re.MULTILINE)


def send_with_progress(
    conn: Connection, sender: str, recipient: str, data: bytes, progress: Callable[[int], None]
) -> str:
    """Send over SMTPS; ``progress(bytes sent)`` as the upload goes. Returns the 250 text."""
    try:
        smtp = smtplib.SMTP_SSL(conn.host, conn.port, context=conn.context, timeout=60)
    except ssl.SSLError as e:
        raise Failure(UNREACHABLE, f"connexion TLS refusée par {_where(conn)} ({_why(e)})") from e
    except OSError as e:
        raise Failure(UNREACHABLE, f"serveur injoignable : {_where(conn)} ({_why(e)})") from e
    try:
        smtp.ehlo()
        code, text = smtp.mail(sender)
        if code != 250:
            raise _refused(code, text)
        code, text = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise _refused(code, text)
        code, text = smtp.docmd("DATA")
        if code != 354:
            raise _refused(code, text)
        # smtplib sends DATA in one write: by chunks, to say how far it got.
        stuffed = _DOT.sub(b"..", data)
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        sent = 0
        assert smtp.sock is not None
        for start in range(0, len(stuffed), _CHUNK):
            chunk = stuffed[start : start + _CHUNK]
            smtp.sock.sendall(chunk)
            sent += len(chunk)
            progress(min(sent, len(data)))
        smtp.sock.sendall(b".\r\n")
        code, text = smtp.getreply()
        if code != 250:
            raise _refused(code, text)
        return text.decode("utf-8", "replace")
    except (smtplib.SMTPException, OSError) as e:
        if isinstance(e, smtplib.SMTPResponseException):
            raise _refused(e.smtp_code, e.smtp_error) from e
        raise Failure(UNREACHABLE, f"connexion interrompue avec {_where(conn)} ({_why(e)})") from e
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _refused(code: int, text: bytes | str) -> Failure:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    lines = said.splitlines() or [""]
    said = "\n".join(f"  {code} {line}" for line in lines)
    return Failure(INVALID, f"refusé par le serveur :\n{said}")


def _progress_line(total: int, err: TextIO) -> Callable[[int], None]:
    """A line saying how much is sent: redrawn on a terminal, else written once at the end."""
    live = err.isatty()

    def show(sent: int) -> None:
        line = f"envoi : {sent * 100 // max(total, 1)} % ({sent} / {total} octets)"
        if live:
            err.write("\r" + line)
            if sent >= total:
                err.write("\n")
        elif sent >= total:
            err.write(line + "\n")
        err.flush()

    return show


def cmd_send(args: argparse.Namespace, out: TextIO) -> int:
    media_type = args.media_type
    data = _read(args.file, "document")
    attachments = _attachments(args.attachments)
    errors = _check(media_type, data, attachments, None)
    if errors:
        for line in errors:
            print(line, file=out)
        print(f"{args.file} : {len(errors)} erreur(s), rien n'est envoyé", file=sys.stderr)
        return INVALID
    document = json.loads(data)
    conn = _connection(args)
    sender = _sender(conn, args.sender)
    if media_type == SAISINE:
        code = document["juridiction"]["code"]
        recipient = args.to or _juridiction_address(conn, code, "saisine_address")
        subject = args.subject or f"Saisine {code}"
        text = "Saisine jointe (palais client)."
    else:
        number = document["dossier"]["number"]
        recipient = args.to or _juridiction_address(
            conn, document["dossier"]["juridiction_code"], "constitution_address"
        )
        subject = args.subject or f"[{number}] Constitution"
        text = document.get("message") or "Constitution jointe (palais client)."
    kind = KINDS[media_type]
    message = build_message(
        sender=sender,
        recipient=recipient,
        subject=subject,
        media_type=media_type,
        document=data,
        document_name=f"{kind.name}.json",
        attachments=attachments,
        text=text,
    )
    reply = send_with_progress(
        conn, sender, recipient, message, _progress_line(len(message), sys.stderr)
    )
    print(f"{kind.name} envoyée à {recipient} : {reply}", file=out)
    return OK


# -- the command line -----------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """The connection's options; on each command too (``default`` SUPPRESS there,
    so that an option given before the command is kept)."""
    parser.add_argument("--cert", default=default, help="your certificate, PEM (or PALAIS_CERT)")
    parser.add_argument("--key", default=default, help="its private key, PEM (or PALAIS_KEY)")
    parser.add_argument("--ca", default=default, help="the gateway's CA, PEM (or PALAIS_CA)")
    parser.add_argument("--host", default=default, help="the gateway (or PALAIS_HOST; localhost)")
    parser.add_argument("--port", default=default, help="its SMTPS port (or PALAIS_PORT; 465)")
    parser.add_argument(
        "--https-port", default=default, help="its HTTPS port (or PALAIS_HTTPS_PORT; 443)"
    )


def add_client(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = sub.add_parser(
        "client",
        help="saisines and constitutions from the command line, with your certificate",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(client)
    options = argparse.ArgumentParser(add_help=False)
    _connection_options(options, argparse.SUPPRESS)
    commands = client.add_subparsers(dest="client_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "juridictions", parents=[options], help="find juridictions by 3 letters of their city"
    )
    p.add_argument("search", metavar="SEARCH")
    p.add_argument("--type", choices=("CPH", "TPROX", "TJ"))
    p.add_argument("--json", action="store_true", help="the directory's entries as JSON")
    p.set_defaults(client=cmd_juridictions)
    for name, media_type in (("saisine", SAISINE), ("constitution", CONSTITUTION)):
        group = commands.add_parser(name, help=f"validate or send a {name}")
        actions = group.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
        p = actions.add_parser("validate", help=f"check a {name} here, one error per line")
        p.add_argument("file", metavar="FILE")
        p.add_argument("attachments", nargs="*", metavar="ATTACHMENTS")
        if name == "saisine":
            p.add_argument(
                "--slots", metavar="SLOTS.json", help="the juridiction's opened hearing slots"
            )
        p.set_defaults(client=cmd_validate, media_type=media_type, slots=None)
        p = actions.add_parser(
            "send", parents=[options], help=f"check and send a {name} with its attachments"
        )
        p.add_argument("file", metavar="FILE")
        p.add_argument("attachments", nargs="*", metavar="ATTACHMENTS")
        p.add_argument("--to", help="send there rather than to the juridiction's address")
        p.add_argument("--subject", help="the mail's subject")
        p.add_argument("--from", dest="sender", help="your address (default: your certificate's)")
        p.set_defaults(client=cmd_send, media_type=media_type)
    from palais.client_alerts import add_alerts  # it uses this module's connection

    add_alerts(commands, options)
    from palais.client_dossiers import add_search_dossier  # likewise

    add_search_dossier(commands, options)
    client.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        status: int = args.client(args, sys.stdout)
    except Failure as e:
        print(f"palais client: {e.text}", file=sys.stderr)
        return e.status
    except TimeoutError:
        print("palais client: le serveur ne répond pas", file=sys.stderr)
        return UNREACHABLE
    return status
