"""What one HQ process runs, and how: one settings object, :class:`HqSettings`.

An HQ process is made of up to three parts: **ingest** (device records into the ledger,
presence, reconciliation, gap re-requests, the denylist broadcast), the **fleet
service** (UID authorisation and the clock for terminals) and the **API** (HTTPS:
enrolment, tokens, revocation, health). A single machine runs all three in one process;
a larger chain runs several ingest workers (one answering fleet service among them) and
the API apart. Which parts run, where the broker and the database are, and the rules HQ
judges records by are all here, so the command line, the demo and the tests build a
process the same way.

Reading a site folder (``onecard broker init``) is not HQ's business: hq_server imports
only ``protocol``. Whoever runs HQ resolves the folder into a :class:`BrokerLink` (with
the service identity's TLS context) and an :class:`ApiSettings` (with the device CA);
``onecard/site.py`` does that for the command line.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hq_server.devices.card_keys import CardKeyring
from hq_server.devices.enrolment import BrokerAddress, DeviceAuthority
from hq_server.ingest.quarantine import QuarantineLimits
from hq_server.ingest.record_rules import RulesConfig
from hq_server.reconciliation.rules import ReconcileConfig

if TYPE_CHECKING:
    from hq_server.backup.schedule import BackupSchedule

#: HQ's identity on a password broker (development, tests, the demo).
HQ_BROKER_USER = "hq@onecard"


@dataclass(frozen=True)
class BrokerLink:
    """Where and as whom HQ reaches the broker.

    On a password broker, ``username`` and ``password``; on the production broker, the
    services listener with mutual TLS: ``tls`` presents HQ's service certificate and
    trusts the broker's, and username and password stay empty.
    """

    host: str
    port: int
    username: str = ""
    password: str = ""
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"broker port {self.port} is not between 1 and 65535")

    def __repr__(self) -> str:  # never print the password
        return (f"BrokerLink({self.host}:{self.port}, user={self.username!r}, "
                f"tls={'yes' if self.tls else 'no'})")


@dataclass(frozen=True)
class ApiSettings:
    """HQ's HTTPS API: where it listens, its certificate, and what enrolment needs.

    ``broker_address`` is what enrolled terminals are told to connect to; ``authority``
    signs device certificates and cuts revoked devices off (the site's device CA).
    TLS is not optional: tokens and keys cross this link.
    """

    certfile: Path
    keyfile: Path
    broker_address: BrokerAddress
    authority: DeviceAuthority | None
    host: str = "127.0.0.1"
    port: int = 8443
    #: The chain's card masters, handed to terminals per role (None: HQ holds none).
    card_keys: CardKeyring | None = None
    #: Seconds :meth:`HqProcess.start` waits for the API to listen before giving up.
    start_timeout_s: float = 20.0

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


@dataclass(frozen=True)
class HqSettings:
    """One HQ process: its database, its broker, which parts it runs and their rules.

    ``client_id`` is the MQTT client id of the ingest worker (the fleet service uses
    ``<client_id>-fleet``) and names the process in the health rows ``onecard hq
    status`` reads; give each worker of a chain its own.
    """

    database_url: str
    broker: BrokerLink | None = None
    client_id: str = "hq-ingest-1"
    #: The parts: ingest of device records; the fleet service answering terminals (give
    #: it to one process of a chain only, so each request is answered once); the API
    #: when its settings are given.
    ingest: bool = True
    fleet: bool = True
    api: ApiSettings | None = None
    #: Threads checking signatures beside the database stage (Ed25519 releases the GIL).
    verify_threads: int = 1
    rules: RulesConfig = field(default_factory=RulesConfig)
    quarantine: QuarantineLimits = field(default_factory=QuarantineLimits)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    #: Seconds between reconciliation rounds of the cards with new records (None: never).
    reconcile_every: float | None = 2.0
    #: Seconds between re-requests of the records devices have not delivered.
    rerequest_every: float | None = 10.0
    #: Write the parts' health rows (``hq status``, ``GET /health``). An API-only
    #: process leaves them off, so they keep describing the processes that ingest.
    health_rows: bool = True
    #: Seconds between health rows.
    beat_every_s: float = 2.0
    #: A part that dies more than ``max_restarts`` times within ``restart_window_s``
    #: seconds stops the process (a crash loop: systemd starts it afresh).
    max_restarts: int = 5
    restart_window_s: float = 60.0
    #: The archive of acknowledged records (hq_server.backup.archive): every batch's
    #: records are fsync'd there before its acks leave. None: no archive.
    archive_dir: Path | None = None
    #: Backups on a schedule (备份), a supervised part of this process. None: none here.
    backups: BackupSchedule | None = None

    def __post_init__(self) -> None:
        if not (self.ingest or self.fleet or self.api):
            raise ValueError("an HQ process runs at least one part: ingest, fleet or API")
        if (self.ingest or self.fleet) and self.broker is None:
            raise ValueError("ingest and the fleet service need a broker to connect to")
        if self.verify_threads < 1:
            raise ValueError("verify_threads must be at least 1")

    @property
    def parts(self) -> list[str]:
        """The parts this process runs, by name: ingest, fleet, api."""
        return [name for name, on in (("ingest", self.ingest), ("fleet", self.fleet),
                                      ("api", self.api is not None)) if on]
