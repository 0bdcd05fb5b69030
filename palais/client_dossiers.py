"""``palais client search-dossier``: the dossier a constitution is for.

    palais client search-dossier NUMBER [--json]
    palais client search-dossier --type CPH|TPROX|TJ --juridiction CODE
                                 [--demandeur NAME] [--defendeur NAME] [--json]

With your certificate and key files, against the gateway's HTTPS API
(``/api/dossiers``): by its number, or by the names of its parties (type
and juridiction mandatory, at least one name). Each dossier found is one
line: number, juridiction, service, status, demandeur(s), défendeur(s).
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO
from urllib.parse import urlencode

from palais.client_cli import OK, UNREACHABLE, USAGE, Failure, _connection, https_json

__all__ = ["add_search_dossier"]

_PATH = "/api/dossiers"


def cmd_search_dossier(args: argparse.Namespace, out: TextIO) -> int:
    if args.number is None and not (args.type and args.juridiction):
        raise Failure(USAGE, "un numéro de dossier, ou --type et --juridiction avec un nom")
    query = {
        k: v
        for k, v in (
            ("numero", args.number),
            ("type", args.type),
            ("juridiction", args.juridiction),
            ("demandeur", args.demandeur),
            ("defendeur", args.defendeur),
        )
        if v
    }
    conn = _connection(args)
    answer = https_json(conn, "GET", f"{_PATH}?{urlencode(query)}")
    found = answer.get("dossiers")
    if not isinstance(found, list):
        raise Failure(UNREACHABLE, "réponse inattendue du serveur")
    if args.json:
        print(json.dumps(found, ensure_ascii=False, indent=2), file=out)
        return OK
    for d in found:
        print(
            f"{d['number']}\t{d['juridiction']}\t{d['service']}\t{d['status'] or '-'}\t"
            f"demandeur : {', '.join(d['demandeur']) or '-'}\t"
            f"défendeur : {', '.join(d['defendeur']) or '-'}",
            file=out,
        )
    if not found:
        print("aucun dossier trouvé", file=out)
    return OK


def add_search_dossier(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    options: argparse.ArgumentParser,
) -> None:
    p = commands.add_parser(
        "search-dossier",
        parents=[options],
        help="find a dossier by number, or by juridiction and party names",
    )
    p.add_argument("number", nargs="?", metavar="NUMBER", help="AAAA-NNNNNNN")
    p.add_argument("--type", choices=("CPH", "TPROX", "TJ"))
    p.add_argument("--juridiction", metavar="CODE", help="as in `palais client juridictions`")
    p.add_argument("--demandeur", metavar="NAME")
    p.add_argument("--defendeur", metavar="NAME")
    p.add_argument("--json", action="store_true", help="the dossiers found as JSON")
    p.set_defaults(client=cmd_search_dossier)
