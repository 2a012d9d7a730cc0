"""One HQ process, composed from :class:`~hq_server.process.settings.HqSettings`.

:class:`HqProcess` builds the parts the settings ask for — the ingest worker, the
answering fleet service, the HTTPS API — and runs every thread of them under one
:class:`~hq_server.process.supervision.Supervisor`: a part that dies is restarted with
its reason logged and kept in its health row; one that keeps dying stops the process
with :data:`~hq_server.process.supervision.EXIT_FAILED`, so systemd starts it afresh.

``onecard hq run``, ``hq ingest`` and ``hq serve-api`` build settings and call
:meth:`HqProcess.run`; tests use it as a context manager::

    with HqProcess(settings) as hq:   # started; the API (if any) listens
        ...
    # stopped: every part ended, health rows say "stopped"
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from hq_server.api.app import create_app
from hq_server.api.server import ApiServer
from hq_server.backup.archive import AckArchive
from hq_server.backup.schedule import ScheduledBackups
from hq_server.db.engine import open_engine
from hq_server.devices.denylist import denylist_snapshot
from hq_server.devices.uid_credentials import authoriser
from hq_server.fleet.service import FleetService
from hq_server.ingest.worker import IngestWorker
from hq_server.process.settings import ApiSettings, BrokerLink, HqSettings
from hq_server.process.supervision import EXIT_FAILED, Component, Supervisor

log = logging.getLogger(__name__)

#: Seconds the fleet service waits for the broker before saying it keeps trying.
FLEET_CONNECT_WAIT_S = 30.0


class HqProcess:
    """Ingest, fleet service and API as the settings ask, under one supervisor.

    ``say`` receives the lines an operator watching the process wants (the fleet service
    answering, or still waiting for its broker); the command line prints them.
    """

    def __init__(self, settings: HqSettings, *, engine: Engine | None = None,
                 say: Callable[[str], None] = log.info) -> None:
        self.settings = settings
        self.engine = engine if engine is not None else open_engine(settings.database_url)
        self.say = say
        self.supervisor = Supervisor(settings.client_id,
                                     engine=self.engine if settings.health_rows else None,
                                     beat_every=settings.beat_every_s,
                                     max_restarts=settings.max_restarts,
                                     window_s=settings.restart_window_s)
        self.ingest: IngestWorker | None = None
        self.fleet: FleetService | None = None
        self.api: ApiPart | None = None
        self._fleet_connecting: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._started = self._stopped = False

    # --- the parts -------------------------------------------------------------------------

    def _build_ingest(self, broker: BrokerLink) -> IngestWorker:
        s = self.settings
        worker = IngestWorker(self.engine, host=broker.host, port=broker.port,
                              username=broker.username, password=broker.password,
                              client_id=s.client_id, verify_threads=s.verify_threads,
                              reconcile_every=s.reconcile_every, reconcile_config=s.reconcile,
                              rerequest_every=s.rerequest_every, rules=s.rules,
                              quarantine_limits=s.quarantine,
                              archive=AckArchive(s.archive_dir) if s.archive_dir else None)
        if broker.tls is not None:
            worker.client.tls_set_context(broker.tls)
        return worker

    def _build_fleet(self, broker: BrokerLink) -> FleetService:
        """The fleet service that answers terminals: UID authorisation from the registry
        (``onecard hq uid-credential``), the denylist first, and the clock echo."""
        engine = self.engine

        def denylisted(card_id: str) -> bool:
            return any(e.card_id == card_id for e in denylist_snapshot(engine).cards)

        fleet = FleetService(host=broker.host, port=broker.port, username=broker.username,
                             password=broker.password, client_id=f"{self.settings.client_id}-fleet",
                             authorise=authoriser(engine), denylisted=denylisted)
        if broker.tls is not None:
            fleet.client.tls_set_context(broker.tls)
        return fleet

    def _connect_fleet(self) -> None:
        """In the background: ingest must not wait for the fleet service's broker, and
        stopping HQ must not wait for it either."""
        fleet = self.fleet
        assert fleet is not None
        try:
            fleet.start(timeout=0)  # connects in the background from here on
        except TimeoutError:
            pass
        deadline = time.monotonic() + FLEET_CONNECT_WAIT_S
        while not self._stop_requested.is_set():
            if fleet.connected.wait(0.2):
                self.say("HQ fleet service answering UID authorisation and the clock")
                return
            if time.monotonic() > deadline:  # paho keeps retrying, like the ingest worker
                self.say("HQ fleet service: broker not reachable yet, retrying")
                return

    # --- life --------------------------------------------------------------------------------

    def start(self) -> HqProcess:
        """Start the parts; returns once the API (if any) listens.

        RuntimeError when the API cannot listen (its port taken, its certificate
        unreadable): everything started is stopped again first.
        """
        if self._started:
            raise RuntimeError("this HQ process has already been started")
        self._started = True
        s = self.settings
        if s.ingest:
            assert s.broker is not None
            self.ingest = self._build_ingest(s.broker)
            self.ingest.start(self.supervisor)  # connects; its threads join the supervisor
        if s.fleet:
            assert s.broker is not None
            self.fleet = self._build_fleet(s.broker)
            self.supervisor.add(self.fleet.component())
        if s.api is not None:
            self.api = ApiPart(self.engine, s.api)
            self.supervisor.add(self.api.component())
        if s.backups is not None:
            self.supervisor.add(ScheduledBackups(self.engine, s.backups).component())
        self.supervisor.start()
        if self.fleet is not None:
            self._fleet_connecting = threading.Thread(target=self._connect_fleet,
                                                      name="hq-fleet-connect", daemon=True)
            self._fleet_connecting.start()
        if self.api is not None:
            try:
                self.api.wait_listening(s.api.start_timeout_s)
            except RuntimeError:
                self.stop()
                raise
        log.info("HQ process %s running: %s", s.client_id, ", ".join(s.parts))
        return self

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return; safe from a signal handler (it only sets a flag)."""
        self._stop_requested.set()

    def wait(self) -> int:
        """Block until :meth:`request_stop` or a part that keeps dying; the exit status
        (0, or :data:`~hq_server.process.supervision.EXIT_FAILED`)."""
        failed = self.supervisor.failed
        while not (self._stop_requested.is_set() or failed.is_set()):
            failed.wait(0.5)
        return self.exit_status

    @property
    def exit_status(self) -> int:
        return EXIT_FAILED if self.supervisor.failed.is_set() else 0

    @property
    def failure(self) -> str | None:
        """Why the supervisor gave up, in words; None while the process is healthy."""
        return self.supervisor.failure

    def stop(self) -> None:
        """Stop every part and wait for its threads; the health rows end "stopped"."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        self.supervisor.stop()  # no restarts from here on; each part's run ends
        if self.ingest is not None:
            self.ingest.stop()  # joins the supervisor's threads, then disconnects
        else:
            self.supervisor.join(timeout=30)
        if self.fleet is not None:
            if self._fleet_connecting is not None:
                self._fleet_connecting.join(timeout=5)
            self.fleet.stop()
        if self.api is not None:
            self.api.stop()

    def run(self) -> int:
        """Start, run until stopped (SIGTERM handlers call :meth:`request_stop`, Ctrl-C
        interrupts), stop; the exit status."""
        self.start()
        try:
            return self.wait()
        finally:
            self.stop()

    def __enter__(self) -> HqProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ApiPart:
    """The HTTPS API as a supervised part: uvicorn on its own thread, watched.

    Each run serves on a fresh server; a server that stops while HQ runs is a death (the
    supervisor restarts it). The first start is awaited by :meth:`HqProcess.start`, so a
    port that is taken is an error at once, not a crash loop.
    """

    def __init__(self, engine: Engine, settings: ApiSettings) -> None:
        self.settings = settings
        self.app = create_app(engine, settings.authority, settings.broker_address,
                              settings.card_keys)
        self.server: ApiServer | None = None
        self.listening = threading.Event()
        self._first_failure: str | None = None
        self._first_try = threading.Event()
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return self.settings.url

    def component(self) -> Component:
        return Component("api", self._serve, stop=self._stop.set,
                         progress=lambda: {"listening": self.listening.is_set()})

    def _serve(self) -> None:
        s = self.settings
        server = ApiServer(self.app, s.host, s.port, s.certfile, s.keyfile)
        self.server = server
        try:
            server.start(timeout=s.start_timeout_s)
        except RuntimeError as exc:
            if not self._first_try.is_set():
                self._first_failure = f"HQ API could not listen on {s.host}:{s.port}: {exc}"
                self._first_try.set()
            raise
        self.listening.set()
        self._first_try.set()
        try:
            while not self._stop.wait(0.5):
                if not server.thread.is_alive():
                    raise RuntimeError(f"HQ API on {s.host}:{s.port} stopped serving")
        finally:
            self.listening.clear()
            server.stop()

    def wait_listening(self, timeout: float) -> None:
        """Return once the API listens; RuntimeError when its first start failed."""
        if not self._first_try.wait(timeout + 5):
            raise RuntimeError(f"HQ API did not start within {timeout:g} s")
        if self._first_failure is not None:
            raise RuntimeError(self._first_failure)

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.stop()
