"""`palais init`: a self-contained instance with a development PKI and demo data."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection

from palais.config import Settings
from palais.juridictions_file import INSTANCE_FILE, SAMPLE, load_directory
from palais.mailbox.dossiers import plan_dossier_opening
from palais.mailbox.identity import Role
from palais.pki.devpki import STRANGER, DevPki, create_dev_pki, issue_identity, revoke
from palais.storage import open_storage
from palais.storage.directory import Directory
from palais.storage.writer import WriteContext

PORT_OFFSETS = {"smtps": 465, "submission": 587, "imaps": 993, "court": 25, "https": 443}
DOSSIER = "2025-0000138"


@dataclass(frozen=True)
class DemoPerson:
    name: str
    role: Role
    given: str
    surname: str
    address: str
    serial: str


DEMO_PEOPLE = (
    DemoPerson(
        "avocat1",
        Role.AVOCAT,
        "Camille",
        "Dupont",
        "camille.dupont@avocats.palais.test",
        "CNB-33-012345",
    ),
    DemoPerson(
        "avocat2",
        Role.AVOCAT,
        "Hugo",
        "Lambert",
        "hugo.lambert@avocats.palais.test",
        "CNB-33-023456",
    ),
    DemoPerson(
        "avocat3", Role.AVOCAT, "Sarah", "Petit", "sarah.petit@avocats.palais.test", "CNB-75-034567"
    ),
    DemoPerson(
        "collaborateur1",
        Role.COLLABORATEUR,
        "Lucas",
        "Martin",
        "lucas.martin@avocats.palais.test",
        "CNB-33-C-000871",
    ),
    DemoPerson(
        "greffier1",
        Role.GREFFIER,
        "Nadia",
        "Bernard",
        "nadia.bernard@justice.palais.test",
        "MJ-G-104233",
    ),
    DemoPerson(
        "magistrat1",
        Role.MAGISTRAT,
        "Paul",
        "Lefèvre",
        "paul.lefevre@justice.palais.test",
        "MJ-M-009871",
    ),
    DemoPerson(
        "admin1", Role.ADMIN, "Inès", "Moreau", "ines.moreau@admin.palais.test", "PAL-ADM-0001"
    ),
    DemoPerson(
        "revoked",
        Role.AVOCAT,
        "Victor",
        "Radie",
        "victor.radie@avocats.palais.test",
        "CNB-33-099999",
    ),
    DemoPerson(
        "expired",
        Role.AVOCAT,
        "Odile",
        "Perimee",
        "odile.perimee@avocats.palais.test",
        "CNB-33-088888",
    ),
)
SERVICE = (
    "cph-bordeaux-commerce@greffes.palais.test",
    "CPH BORDEAUX - Commerce",
    "Conseil de prud'hommes de Bordeaux",
)
COURT = ("court1", "portalis@cph-bordeaux.juridictions.palais.test", "Portalis CPH Bordeaux")
STRANGER_PERSON = ("stranger", "eve.intrus@avocats.palais.test")


def config_text(base: int, database: str | None = None, node: str = "") -> str:
    ports = {k: base + v for k, v in PORT_OFFSETS.items()}
    url = json.dumps(database or "sqlite:///palais.db")
    node_line = f"node = {json.dumps(node)}\n" if node else ""
    return f"""# Palais instance created by `palais init`. Every key is documented in
# conf/palais.example.toml; paths are relative to this file.

[instance]
name = "palais-dev"
hostname = "localhost"
event_loop = "uvloop"
{node_line}
[database]
url = {url}

[storage]
blobs = "blobs"

[listen]
host = "127.0.0.1"
smtps = {ports["smtps"]}
submission = {ports["submission"]}
imaps = {ports["imaps"]}
court = {ports["court"]}
https = {ports["https"]}
"""


class InstanceExists(Exception):
    pass


# -- file permissions ----------------------------------------------------------
#
# The database holds subjects, addresses (Bcc included) and certificate
# fingerprints; blobs hold the messages; pki holds private keys. None of it is
# anyone else's business on the machine: owner-only, at init and at every start.

log = logging.getLogger("palais.instance")

OWNER_ONLY_UMASK = 0o077
_SQLITE_PREFIX = "sqlite:///"
# SQLite's companions of a database file (write-ahead log, shared memory, rollback journal).
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


@contextlib.contextmanager
def owner_only_umask() -> Iterator[None]:
    """New files and directories are owner-only while the block runs."""
    previous = os.umask(OWNER_ONLY_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def sqlite_path(url: str) -> Path | None:
    """The database file of an absolute SQLite URL; None for other databases."""
    if not url.startswith(_SQLITE_PREFIX) or ":memory:" in url:
        return None
    return Path(url[len(_SQLITE_PREFIX) :].split("?", 1)[0])


def _owner_only(path: Path) -> bool:
    """Drop group and other permissions of one file or directory; True if it changed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
        return False
    if st.st_uid != os.geteuid():
        log.warning("cannot make %s owner-only: owned by uid %d", path, st.st_uid)
        return False
    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    return True


def _tree(root: Path) -> Iterator[Path]:
    yield root
    if root.is_dir() and not root.is_symlink():
        for directory, dirs, files in os.walk(root):
            for name in (*dirs, *files):
                yield Path(directory) / name


def secure_files(
    root: Path, *, database: Path | None, blobs: Path, keys: Iterable[Path]
) -> list[Path]:
    """Make the instance directory, database files, blobs and private keys owner-only.

    Only ever removes permissions. Returns what was changed.
    """
    paths: list[Path] = [root, root / "palais.toml"]
    if database is not None:
        paths += [database, *(Path(f"{database}{suffix}") for suffix in _SQLITE_COMPANIONS)]
    paths += _tree(blobs)
    paths += keys
    if (root / "pki").is_dir():
        paths += (root / "pki").rglob("*.key")
        paths += [(root / "pki" / "private"), (root / "pki" / "identities")]
    changed: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        if _owner_only(path):
            changed.append(path)
    return changed


def secure_instance(settings: Settings) -> list[Path]:
    """``secure_files`` for a configured instance (``palais serve`` calls it at start)."""
    changed = secure_files(
        settings.root,
        database=sqlite_path(settings.database_url()),
        blobs=settings.storage.blobs,
        keys=(settings.tls.key, settings.evidence.key),
    )
    for path in changed:
        log.warning("permissions tightened to owner-only: %s", path)
    return changed


def init_instance(
    root: Path, *, base_port: int = 10000, database: str | None = None
) -> dict[str, object]:
    """A new instance in ``root``; ``database``: its state in that PostgreSQL
    (the first node of a cluster, named ``FIRST_NODE``) rather than SQLite."""
    with owner_only_umask():
        demo = _init_instance(root.resolve(), base_port=base_port, database=database)
        root = root.resolve()
        secure_files(root, database=root / "palais.db", blobs=root / "blobs", keys=())
    return demo


FIRST_NODE = "node1"


def _check_database(database: str) -> None:
    """A PostgreSQL URL whose database holds no instance yet."""
    from sqlalchemy import create_engine, inspect, text

    from palais.storage.engine import is_sqlite

    if is_sqlite(database):
        raise InstanceExists("--database takes a PostgreSQL URL (without it: SQLite)")
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            if (
                inspect(conn).has_table("account")
                and conn.execute(text("SELECT 1 FROM account LIMIT 1")).first()
            ):
                raise InstanceExists(
                    "that database already holds a Palais instance; add a node to it"
                    " with `palais node add DIR NEWDIR --ports BASE`"
                )
    finally:
        engine.dispose()


def _init_instance(root: Path, *, base_port: int, database: str | None = None) -> dict[str, object]:
    if (root / "palais.toml").exists():
        raise InstanceExists(f"{root} already holds an instance (palais.toml exists)")
    if database is not None:
        _check_database(database)
    root.mkdir(parents=True, exist_ok=True)
    pki: DevPki = create_dev_pki(root / "pki")
    now = datetime.now(UTC)
    identities: dict[str, dict[str, str]] = {}
    fingerprints: dict[str, str] = {}

    def rel(p: Path) -> str:
        return str(p.resolve().relative_to(root))

    for person in DEMO_PEOPLE:
        not_before = not_after = None
        if person.name == "expired":
            not_before, not_after = now - timedelta(days=400), now - timedelta(days=1)
        issued = issue_identity(
            pki,
            person.name,
            role=person.role,
            given_name=person.given,
            surname=person.surname,
            address=person.address,
            serial_number=person.serial,
            not_before=not_before,
            not_after=not_after,
        )
        if person.name == "revoked":
            revoke(pki, issued.cert_path)
        identities[person.name] = {
            "role": person.role.value,
            "address": issued.address,
            "cert": rel(issued.cert_path),
            "key": rel(issued.key_path),
        }
        fingerprints[person.name] = issued.fingerprint
    court = issue_identity(
        pki,
        COURT[0],
        role=Role.COURT_SYSTEM,
        common_name=COURT[2],
        organization="Conseil de prud'hommes de Bordeaux",
        address=COURT[1],
    )
    identities[COURT[0]] = {
        "role": Role.COURT_SYSTEM.value,
        "address": court.address,
        "cert": rel(court.cert_path),
        "key": rel(court.key_path),
    }
    fingerprints[COURT[0]] = court.fingerprint
    stranger = issue_identity(
        pki,
        STRANGER_PERSON[0],
        role=Role.AVOCAT,
        given_name="Eve",
        surname="Intrus",
        address=STRANGER_PERSON[1],
        serial_number="CNB-99-000000",
        issuer=STRANGER,
    )
    identities["stranger"] = {
        "role": Role.AVOCAT.value,
        "address": stranger.address,
        "cert": rel(stranger.cert_path),
        "key": rel(stranger.key_path),
    }

    (root / "palais.toml").write_text(
        config_text(base_port, database, FIRST_NODE if database else ""), encoding="utf-8"
    )
    # The operator's own copy of the juridictions directory, read at start.
    (root / INSTANCE_FILE).write_bytes(SAMPLE.read_bytes())
    juridictions = load_directory(root / INSTANCE_FILE)
    storage = open_storage(database or f"sqlite:///{root / 'palais.db'}", root / "blobs")
    dossier_address = f"{DOSSIER}@dossiers.palais.test"
    try:

        def populate(conn: Connection, _ctx: WriteContext) -> None:
            service_id = Directory.add_service(
                conn, address=SERVICE[0], name=SERVICE[1], juridiction=SERVICE[2]
            )
            accounts: dict[str, int] = {}
            for person in DEMO_PEOPLE:
                accounts[person.name] = Directory.add_account(
                    conn,
                    address=person.address,
                    role=person.role,
                    display_name=f"{person.given} {person.surname.upper()}",
                    fingerprint=fingerprints[person.name],
                    service_id=service_id if person.role is Role.GREFFIER else None,
                    identifier=person.serial,  # keyed by the card's number (migration 0006)
                )
            accounts[COURT[0]] = Directory.add_account(
                conn,
                address=COURT[1],
                role=Role.COURT_SYSTEM,
                display_name=COURT[2],
                fingerprint=fingerprints[COURT[0]],
            )
            joining = [
                Directory.participation(conn, accounts[name], capacity)
                for name, capacity in (
                    ("avocat1", "avocat"),
                    ("avocat2", "avocat"),
                    ("magistrat1", "magistrat"),
                    (COURT[0], "juridiction"),
                )
            ]
            Directory.open_dossier(
                conn,
                plan_dossier_opening(
                    number=DOSSIER,
                    address=dossier_address,
                    juridiction=SERVICE[2],
                    service_id=service_id,
                    service_address=SERVICE[0],
                    participants=joining,
                ),
            )

        storage.commits.run_now(populate)
    finally:
        storage.close()

    demo: dict[str, object] = {
        "ports": {k: base_port + v for k, v in PORT_OFFSETS.items()},
        "ca": rel(pki.ca_path),
        # The anchor a receipt's signature chains to: `palais verify-receipt --trust`.
        "evidence_ca": rel(pki.ca_path),
        "identities": identities,
        "dossiers": [
            {
                "number": DOSSIER,
                "address": dossier_address,
                "juridiction": SERVICE[2],
                "service": SERVICE[1],
                "service_address": SERVICE[0],
                "lawyers": ["avocat1", "avocat2"],
            }
        ],
        # Where saisines and constitutions go; the demo court system is
        # CPH-BORDEAUX's (its certificate's subject is the directory's).
        "juridictions": [
            {
                "code": j.code,
                "type": j.type.value,
                "city": j.city,
                "saisine_address": j.saisine_address,
                "constitution_address": j.constitution_address,
                "court_system": j.court_system.address,
            }
            for j in juridictions
        ],
    }
    (root / "demo.json").write_text(
        json.dumps(demo, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return demo


# -- another node of a cluster ----------------------------------------------------

_LISTEN_KEYS = frozenset(PORT_OFFSETS)


def node_config(text: str, *, base_port: int, node: str) -> str:
    """An instance's palais.toml for another node: its own ports and node id.

    Line by line, so that the operator's comments and settings stay as they are.
    """
    out: list[str] = []
    section = ""
    named = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "instance" and not named:
                out.append(f"node = {json.dumps(node)}")
                named = True
            section = stripped[1:-1].strip()
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if section == "listen" and key in _LISTEN_KEYS:
            line = f"{key} = {base_port + PORT_OFFSETS[key]}"
        elif section == "instance" and key == "node":
            line = f"node = {json.dumps(node)}"
            named = True
        out.append(line)
    if not named:
        out += ["", "[instance]", f"node = {json.dumps(node)}"]
    return "\n".join(out) + "\n"


def add_node(
    source: Path, target: Path, *, base_port: int, node: str | None = None
) -> dict[str, object]:
    """``palais node add``: another node of ``source``'s cluster in ``target``.

    Same database, PKI (server, evidence and demo keys) and settings; its own
    ports and node id (``node``, by default the new directory's name). The
    database is not touched: the schema and data are the cluster's.
    """
    import shutil

    from palais.config import ConfigError, load_settings
    from palais.storage.engine import is_sqlite

    source, target = source.resolve(), target.resolve()
    try:
        settings = load_settings(source / "palais.toml")
    except ConfigError as e:
        raise InstanceExists(str(e)) from None
    if is_sqlite(settings.database_url()):
        raise InstanceExists(
            f"{source} keeps its state in SQLite, which one process owns; a node needs"
            " PostgreSQL ([database] url; `palais init DIR --database URL`)"
        )
    if (target / "palais.toml").exists():
        raise InstanceExists(f"{target} already holds an instance (palais.toml exists)")
    name = node or target.name
    if name == settings.instance.node:
        raise InstanceExists(f"node id {name!r} is {source}'s own; choose another (--node)")
    with owner_only_umask():
        target.mkdir(parents=True, exist_ok=True)
        for entry in source.iterdir():
            # PKI and the files the configuration names (the juridictions
            # directory...); not another node's blobs, logs or SQLite files.
            if entry.name in ("palais.toml", "demo.json", "blobs") or entry.name.startswith("."):
                continue
            if entry.is_dir():
                shutil.copytree(entry, target / entry.name, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target / entry.name)
        text = (source / "palais.toml").read_text(encoding="utf-8")
        (target / "palais.toml").write_text(
            node_config(text, base_port=base_port, node=name), encoding="utf-8"
        )
        demo: dict[str, object] = {}
        if (source / "demo.json").exists():
            demo = json.loads((source / "demo.json").read_text(encoding="utf-8"))
        demo["ports"] = {k: base_port + v for k, v in PORT_OFFSETS.items()}
        demo["node"] = name
        (target / "demo.json").write_text(
            json.dumps(demo, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        secure_files(target, database=None, blobs=target / "blobs", keys=())
    return demo
