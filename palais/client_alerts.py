"""``palais client alerts``: where and how you are told of what arrives in your dossiers.

    palais client alerts show [--json]
    palais client alerts set ADDRESS [--digest]
    palais client alerts off

With your certificate and key files, against the gateway's HTTPS API
(``/api/alerts``). A notice names the dossier and the kind of event, never
what a message says; ``--digest`` gathers a day's notices in one mail.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from palais.client_cli import OK, Connection, _connection, https_json

__all__ = ["add_alerts"]

_PATH = "/api/alerts"


def _call(conn: Connection, method: str, body: dict[str, str] | None = None) -> dict[str, Any]:
    return https_json(conn, method, _PATH, body)


_MODES = {"immediate": "à chaque événement", "digest": "un récapitulatif par jour"}


def _show(alert: Any, out: TextIO) -> None:
    if not isinstance(alert, dict):
        print("aucune alerte", file=out)
        return
    mode = _MODES.get(str(alert.get("mode")), str(alert.get("mode")))
    print(f"alertes à {alert.get('address')} : {mode} (depuis {alert.get('since')})", file=out)


def cmd_alerts(args: argparse.Namespace, out: TextIO) -> int:
    conn = _connection(args)
    action = args.alerts_command
    if action == "show":
        answer = _call(conn, "GET")
    elif action == "set":
        mode = "digest" if args.digest else "immediate"
        answer = _call(conn, "PUT", {"address": args.address, "mode": mode})
    else:
        answer = _call(conn, "DELETE")
        print("alertes arrêtées" if answer.get("removed") else "aucune alerte", file=out)
        return OK
    if getattr(args, "json", False):
        print(json.dumps(answer.get("alert"), ensure_ascii=False), file=out)
    else:
        _show(answer.get("alert"), out)
    return OK


def add_alerts(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    options: argparse.ArgumentParser,
) -> None:
    group = commands.add_parser(
        "alerts", help="notices of what arrives in your dossiers, at an outside address"
    )
    actions = group.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    p = actions.add_parser("show", parents=[options], help="your alert setting")
    p.add_argument("--json", action="store_true", help="the setting as JSON")
    p = actions.add_parser("set", parents=[options], help="send notices to ADDRESS")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--digest", action="store_true", help="one mail a day gathering the day's notices"
    )
    p.add_argument("--json", action="store_true", help="the setting as JSON")
    actions.add_parser("off", parents=[options], help="no more notices")
    group.set_defaults(client=cmd_alerts)
