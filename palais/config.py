"""Configuration: declared by the code that uses it, loaded from TOML.

Each section is a dataclass whose fields are the keys it accepts, with
documented defaults (``conf/palais.example.toml`` shows them all). Relative
paths are resolved against the directory of the configuration file. An
unknown section or key is an error that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palais.mailbox.filing import DEFAULT_RESEND_WINDOW

EVENT_LOOPS = ("uvloop", "asyncio")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class InstanceSection:
    name: str = "palais"
    hostname: str = "localhost"  # announced in SMTP greetings
    mail_domain: str = "palais.test"
    # "uvloop" (libuv, measured faster on SMTP ingest) or "asyncio" (the standard loop).
    event_loop: str = "uvloop"
    # This node's name among several sharing one PostgreSQL (`palais node add`
    # sets it): in every log line and metric. Empty: a single node.
    node: str = ""


@dataclass(frozen=True)
class DatabaseSection:
    url: str = "sqlite:///palais.db"  # relative SQLite paths are resolved against the config dir


@dataclass(frozen=True)
class StorageSection:
    blobs: Path = Path("blobs")
    max_batch: int = 256  # jobs committed together by the writer
    # SQLite with a key file: SMTP ingest's filings written by a process of
    # their own, on another core (palais.storage.filing_process); false
    # keeps one process (as an evidence key on an HSM does).
    filing_process: bool = True
    # PostgreSQL: large objects no blob row names (rolled-back batches) are
    # unlinked once seen unnamed for blob_sweep_grace seconds (longer than any
    # batch: palais.storage.blob_sweep); a sweep every blob_sweep_interval.
    blob_sweep_interval: float = 900.0
    blob_sweep_grace: float = 3600.0


@dataclass(frozen=True)
class TlsSection:
    certificate: Path = Path("pki/server.pem")
    key: Path = Path("pki/server.key")


@dataclass(frozen=True)
class TrustSection:
    avocats: Path = Path("pki/anchors/avocats.pem")
    justice: Path = Path("pki/anchors/justice.pem")
    juridictions: Path = Path("pki/anchors/juridictions.pem")
    admin: Path = Path("pki/anchors/admin.pem")
    crls: list[Path] = field(
        default_factory=lambda: [
            Path("pki/crl/avocats.pem"),
            Path("pki/crl/justice.pem"),
            Path("pki/crl/juridictions.pem"),
            Path("pki/crl/admin.pem"),
        ]
    )
    # The files above seed the database's trust tables when they are empty;
    # from then on `palais admin trust` and `palais admin crl` change trust,
    # and every node applies a change within watch_interval seconds.
    watch_interval: float = 5.0
    # A CRL past its nextUpdate is still used this many seconds (a warning is
    # logged once), then its CA's clients are refused until a fresh one arrives.
    crl_grace: float = 3600.0
    # Fetch each CA's CRL from the http:// distribution points its
    # certificate names, every crl_fetch_interval seconds.
    crl_fetch: bool = True
    crl_fetch_interval: float = 900.0
    crl_fetch_timeout: float = 10.0


@dataclass(frozen=True)
class EvidenceSection:
    """The evidence key that signs receipts: a key file, or a key on an HSM.

    With ``pkcs11_module`` set the key is the token's (``key`` is unused);
    the PIN is never written here: ``pkcs11_pin`` names ``env:VARIABLE`` or
    ``file:/path/to/pin`` (owner-only).
    """

    certificate: Path = Path("pki/evidence.pem")  # and its chain after it
    key: Path = Path("pki/evidence.key")
    # The trust anchor receipts chain to: what the /verifier page checks against.
    anchor: Path = Path("pki/ca.pem")
    pkcs11_module: str = ""  # e.g. /usr/lib/softhsm/libsofthsm2.so
    pkcs11_token: str = ""  # token label
    pkcs11_key_label: str = "evidence"
    pkcs11_pin: str = ""  # env:NAME or file:PATH


@dataclass(frozen=True)
class ListenSection:
    host: str = "127.0.0.1"
    smtps: int = 10465
    submission: int = 10587
    imaps: int = 10993
    court: int = 10025
    https: int = 10443


@dataclass(frozen=True)
class SmtpSection:
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 50
    timeout: float = 300.0  # client silence once authenticated
    # A resend of the same message (same sender, Message-ID and bytes) within
    # this many seconds gets the first 250 again and files nothing; 0 disables.
    resend_window: float = DEFAULT_RESEND_WINDOW


@dataclass(frozen=True)
class ImapSection:
    max_append_size: int = 64 * 1024 * 1024
    idle_timeout: float = 1800.0
    max_search_keys: int = 256  # keys in one SEARCH program (NO [LIMIT] beyond)
    max_search_cost: int = 20_000_000  # search keys x messages in the mailbox
    max_keywords: int = 64  # distinct keywords on one message
    max_keyword_length: int = 64  # characters in one keyword


@dataclass(frozen=True)
class LimitsSection:
    """Caps that keep one client (or one address) from exhausting the gateway."""

    max_connections: int = 4096  # open connections on all listeners together
    max_connections_per_address: int = 64  # from one client IP address
    handshake_timeout: float = 10.0  # seconds for the TLS handshake
    # Seconds a client has to prove who it is: silence before STARTTLS and
    # EHLO on SMTP (before EHLO on SMTPS); from the handshake to LOGIN or
    # AUTHENTICATE on IMAPS.
    preauth_timeout: float = 30.0
    # Seconds between two checks of every open authenticated session against
    # the trust and the directory in force (revoked or expired certificate,
    # deactivated account). 30 s cuts a session within a minute, even one
    # whose command was still running at the first check.
    session_check_interval: float = 30.0


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogSection:
    level: str = "INFO"
    format: str = "text"  # "text" or "json" (one JSON object per line)


ENROLMENT_POLICIES = ("register", "refuse")


@dataclass(frozen=True)
class AccountsSection:
    # A trusted certificate nobody knows: "register" creates its account on
    # first use, "refuse" refers it to an operator (palais.mailbox.enrolment).
    enrolment: str = "register"


@dataclass(frozen=True)
class DeparturesSection:
    # A departure takes effect at 00:00 the day after its last day in this
    # IANA time zone (the courts' midnight; "UTC" for UTC's).
    timezone: str = "Europe/Paris"
    # Seconds between two looks for departures due (one indexed query).
    check_interval: float = 60.0


@dataclass(frozen=True)
class CourtRelaySection:
    """Court systems with an SMTP endpoint of their own: what lawyers send
    them is relayed there (STARTTLS, mutual TLS, DKIM-signed) through a
    durable queue, instead of waiting in their INBOX for IMAP."""

    # Court system's address -> "host:port"; its certificate must name the
    # address's domain and chain to `anchors`.
    endpoints: dict[str, str] = field(default_factory=dict)
    anchors: Path = Path("pki/anchors/juridictions.pem")
    # What the gateway presents (clientAuth); a server-only certificate is refused.
    client_certificate: Path = Path("pki/relay.pem")
    client_key: Path = Path("pki/relay.key")
    # The gateway's DKIM keys (created at the first start if absent, with
    # dkim-dns.txt, the records to publish); domain: [instance] mail_domain.
    dkim_keys: Path = Path("pki/dkim")
    dkim_selector: str = "palais"
    # Backoff: first wait, growth factor, longest wait; then a non-delivery
    # receipt once give_up_after seconds have passed since filing.
    first_retry: float = 60.0
    backoff_factor: float = 2.0
    max_retry: float = 3600.0
    give_up_after: float = 172800.0
    poll_interval: float = 5.0  # seconds between two looks at the queue
    timeout: float = 60.0  # per SMTP conversation step
    lease: float = 600.0  # a node's hold on a row being sent (another takes it after)


COURT_DKIM_FAILURES = ("off", "flag", "refuse")


@dataclass(frozen=True)
class CourtDkimSection:
    # A court system's message without a valid DKIM signature of its From
    # domain: "refuse" (550 5.7.1), "flag" (stored, Authentication-Results
    # dkim=fail) or "off" (not checked).
    failure: str = "off"
    # The court systems' DKIM public keys, as zone-file TXT lines (the
    # dkim-dns.txt each publishes); there is no DNS lookup.
    records: list[Path] = field(default_factory=list)
    # A court system's own setting, by its address, in place of ``failure``:
    # one being connected may be "flag" while the others are refused.
    systems: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertsSection:
    """Notices to people's outside addresses (``palais.mailbox.alerts``)."""

    # The outbound relay (SMTP smarthost) notices go through; empty: none is
    # sent (settings and notices are kept until one is configured).
    relay_host: str = ""
    relay_port: int = 25
    relay_starttls: bool = False
    # The notices' From and envelope sender; empty: alertes@<mail_domain>.
    sender: str = ""
    # Digests go once a day at this local time ("HH:MM" or "HH:MM:SS") in this zone.
    digest_time: str = "08:00"
    timezone: str = "Europe/Paris"
    # Seconds between two looks for new arrivals and notices due.
    poll_interval: float = 5.0
    # After a failed try, the next one this many seconds later, doubling up to the max.
    retry_interval: float = 60.0
    max_retry_interval: float = 3600.0
    # Several nodes: a message id may commit this long after a higher one.
    grace: float = 120.0

    def digest_hour(self) -> datetime.time:
        return datetime.time.fromisoformat(self.digest_time)


@dataclass(frozen=True)
class DossiersSection:
    # A terminated dossier stays visible this many days after the court
    # system terminated it, then is purged, its receipts excepted.
    retention_days: float = 365.0
    # Seconds between two looks for terminated dossiers to purge.
    purge_interval: float = 3600.0


@dataclass(frozen=True)
class Settings:
    path: Path
    instance: InstanceSection = InstanceSection()
    database: DatabaseSection = DatabaseSection()
    storage: StorageSection = StorageSection()
    tls: TlsSection = TlsSection()
    trust: TrustSection = TrustSection()
    evidence: EvidenceSection = EvidenceSection()
    listen: ListenSection = ListenSection()
    smtp: SmtpSection = SmtpSection()
    imap: ImapSection = ImapSection()
    limits: LimitsSection = LimitsSection()
    log: LogSection = LogSection()
    accounts: AccountsSection = AccountsSection()
    departures: DeparturesSection = DeparturesSection()
    dossiers: DossiersSection = DossiersSection()
    court_relay: CourtRelaySection = CourtRelaySection()
    alerts: AlertsSection = AlertsSection()
    court_dkim: CourtDkimSection = CourtDkimSection()

    @property
    def root(self) -> Path:
        return self.path.parent

    def database_url(self) -> str:
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str((self.root / url[len(prefix) :]).resolve())
        return url


_SECTIONS: dict[str, type[Any]] = {
    f.name: f.type if isinstance(f.type, type) else typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if f.name != "path"
}


def _coerce(value: Any, hint: Any, where: str, root: Path) -> Any:
    origin = typing.get_origin(hint)
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string")
        p = Path(value)
        return p if p.is_absolute() else (root / p)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_coerce(v, inner, f"{where}[{i}]", root) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where}: expected a table of strings")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def _resolve_defaults(section: Any, root: Path) -> Any:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        if isinstance(v, Path) and not v.is_absolute():
            changes[f.name] = root / v
        elif isinstance(v, list) and v and isinstance(v[0], Path):
            changes[f.name] = [p if p.is_absolute() else root / p for p in v]
    return dataclasses.replace(section, **changes)


def load_settings(path: Path) -> Settings:
    path = path.resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such configuration file") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    root = path.parent
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        sections[name] = _resolve_defaults(cls(), root)
    for name, values in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{name}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        cls = _SECTIONS[name]
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key '{key}' in [{name}]")
            kwargs[key] = _coerce(value, hints[key], f"{path}: [{name}] {key}", root)
        sections[name] = dataclasses.replace(sections[name], **kwargs)
    if sections["instance"].event_loop not in EVENT_LOOPS:
        raise ConfigError(f"{path}: [instance] event_loop must be one of {', '.join(EVENT_LOOPS)}")
    if sections["limits"].session_check_interval <= 0:
        raise ConfigError(f"{path}: [limits] session_check_interval must be positive")
    if sections["log"].format not in LOG_FORMATS:
        raise ConfigError(f"{path}: [log] format must be one of {', '.join(LOG_FORMATS)}")
    if sections["accounts"].enrolment not in ENROLMENT_POLICIES:
        raise ConfigError(
            f"{path}: [accounts] enrolment must be one of {', '.join(ENROLMENT_POLICIES)}"
        )
    if min(sections["storage"].blob_sweep_interval, sections["storage"].blob_sweep_grace) <= 0:
        raise ConfigError(
            f"{path}: [storage] blob_sweep_interval and blob_sweep_grace must be positive"
        )
    if sections["departures"].check_interval <= 0:
        raise ConfigError(f"{path}: [departures] check_interval must be positive")
    if min(sections["dossiers"].retention_days, sections["dossiers"].purge_interval) <= 0:
        raise ConfigError(f"{path}: [dossiers] retention_days and purge_interval must be positive")
    if sections["court_dkim"].failure not in COURT_DKIM_FAILURES:
        raise ConfigError(
            f"{path}: [court_dkim] failure must be one of {', '.join(COURT_DKIM_FAILURES)}"
        )
    for system, failure in sections["court_dkim"].systems.items():
        if failure not in COURT_DKIM_FAILURES:
            raise ConfigError(
                f"{path}: [court_dkim.systems] {system}: must be one of"
                f" {', '.join(COURT_DKIM_FAILURES)}"
            )
    try:
        zoneinfo.ZoneInfo(sections["departures"].timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{path}: [departures] timezone: unknown time zone"
            f" {sections['departures'].timezone!r} (e.g. Europe/Paris, UTC)"
        ) from None
    _check_alerts(path, sections["alerts"])
    return Settings(path=path, **sections)


def _check_alerts(path: Path, alerts: AlertsSection) -> None:
    try:
        zoneinfo.ZoneInfo(alerts.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{path}: [alerts] timezone: unknown time zone {alerts.timezone!r}"
        ) from None
    try:
        alerts.digest_hour()
    except ValueError:
        raise ConfigError(
            f"{path}: [alerts] digest_time must be HH:MM or HH:MM:SS, not {alerts.digest_time!r}"
        ) from None
    if min(alerts.poll_interval, alerts.retry_interval, alerts.max_retry_interval) <= 0:
        raise ConfigError(f"{path}: [alerts] intervals must be positive")
