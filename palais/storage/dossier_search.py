"""Dossier search (``palais.mailbox.dossier_search``) on the dossiers and their parties."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from sqlalchemy import Connection, Engine, exists, func, select

from palais.mailbox.dossier_search import MAX_RESULTS, DossierCard, DossierQuery
from palais.storage import schema

__all__ = ["DossierSearch"]

DO = schema.table(schema.Dossier)
SV = schema.table(schema.Service)
DP = schema.table(schema.DossierParty)
LI = schema.table(schema.DossierLife)


def _like(text: str) -> str:
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


class DossierSearch:
    def __init__(self, reader: Engine) -> None:
        self._reader = reader

    async def search(self, query: DossierQuery) -> list[DossierCard]:
        return await asyncio.to_thread(self._search, query)

    def _search(self, query: DossierQuery) -> list[DossierCard]:
        # The status the court system's events changed last, else the one set at creation.
        status = func.coalesce(LI.c.status, DO.c.status).label("status")
        wanted = (
            select(DO.c.id, DO.c.number, DO.c.juridiction, status, SV.c.name)
            .join(SV, SV.c.id == DO.c.service_id)
            .outerjoin(LI, LI.c.dossier_id == DO.c.id)
            .where(LI.c.purged_at.is_(None))
        )
        if query.number is not None:
            wanted = wanted.where(DO.c.number == query.number)
        else:
            j = query.juridiction
            assert j is not None
            # Dossiers opened before migration 0011 name their juridiction, not its code.
            wanted = wanted.where(DO.c.juridiction.in_([j.code, j.name]))
            for quality, name in (("demandeur", query.demandeur), ("defendeur", query.defendeur)):
                if name:
                    wanted = wanted.where(
                        exists().where(
                            DP.c.dossier_id == DO.c.id,
                            DP.c.quality == quality,
                            DP.c.folded.like(_like(name), escape="!"),
                        )
                    )
        with self._reader.connect() as conn:
            rows = conn.execute(wanted.order_by(DO.c.number).limit(MAX_RESULTS)).all()
            parties = self._parties(conn, [int(r.id) for r in rows])
        return [
            DossierCard(
                number=r.number,
                juridiction=r.juridiction,
                service=r.name,
                status=r.status or "",
                demandeur=tuple(parties[int(r.id)]["demandeur"]),
                defendeur=tuple(parties[int(r.id)]["defendeur"]),
            )
            for r in rows
        ]

    @staticmethod
    def _parties(conn: Connection, ids: list[int]) -> dict[int, dict[str, list[str]]]:
        found: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        if ids:
            for r in conn.execute(
                select(DP.c.dossier_id, DP.c.quality, DP.c.name)
                .where(DP.c.dossier_id.in_(ids))
                .order_by(DP.c.id)
            ):
                found[int(r.dossier_id)][r.quality].append(r.name)
        return found
