"""The demo: our broker, HQ, and a fleet of simulated terminals with members tapping.

Everything runs on this machine: a mosquitto with OneCard's config on a free loopback
port, HQ ingest as its own process on a temporary SQLite ledger, and the terminals in
this process, each with its own identity, outbox and MQTT connection. Members carry
simulated MIFARE Classic 1K cards in OneCard's card format: a service desk issues them
and sells swim visits (cash), gates take visits on the deployed gate path
(:class:`terminal_fw.tap.TapRunner`: intent journal, tear-safe commit, records
committed with the intent); a member whose visits run out goes back to the desk for
another package. One gate loses its broker connection for a while and catches up.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from broker_config.render import HQ_USER
from broker_config.runner import Broker
from hq_server.catalogue.versions import set_catalogue
from hq_server.chain.stores import create_store
from hq_server.clock import system_clock
from hq_server.db.engine import open_engine
from hq_server.devices.registry import add_device
from hq_server.ledger.check import check_ledger
from hq_server.operators.access import SYSTEM
from hq_server.reconciliation.runs import reconcile_due
from hq_server.reports.figures import anomaly_counts, ingest_figures
from protocol.card_ops import add_visits, issue, take_visit
from protocol.card_state import RefusalReason
from protocol.keys import ChainKeys
from protocol.mifare import CardRemoved, ReaderError
from protocol.products import CardProduct, Catalogue, CountProduct
from protocol.terminal_config import TerminalConfig, parse_config
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.identity import DeviceIdentity, load_or_create
from terminal_fw.outbox import Outbox
from terminal_fw.tap import IntentJournal, TapResult, TapRunner
from terminal_fw.uplink import Uplink

PRODUCT = "swim"
STORE = "store-01"
DRAIN_TIMEOUT = 120.0
CHAIN_ID = 1

CATALOGUE = Catalogue(
    card_products=(CardProduct(1, "swim-card", count_products=(PRODUCT,)),),
    count_products=(CountProduct(10, PRODUCT, 30000, 10),),  # 10 swims for 300.00 yuan
)


def gate_config() -> TerminalConfig:
    """What HQ would push to the demo's gates: the demo's catalogue, one gate group, and
    the gates let in what the desk sells (swim visits). Parsed as a terminal parses it."""
    return parse_config({"version": 1, "catalogue": CATALOGUE.to_dict(),
                         "gate": {"group": 0, "accepts": [PRODUCT]}})


@dataclass
class DemoConfig:
    gates: int = 3
    duration: float | None = None  # None: until Ctrl-C
    tap_rate: float = 4.0
    outage: float | None = None
    headless: bool = False
    members: int = 40
    workdir: Path | None = None


@dataclass
class Member:
    """A member and the card in their pocket; the lock is the hand that holds it."""

    card: MifareClassic1K
    hand: threading.Lock = field(default_factory=threading.Lock)


class SimTerminal:
    """Identity, outbox and uplink of one simulated terminal."""

    def __init__(self, device_id: str, role: str, workdir: Path, broker: Broker) -> None:
        self.device_id = device_id
        self.role = role
        folder = workdir / device_id
        self.identity: DeviceIdentity = load_or_create(folder / "secrets", device_id, STORE)
        self.outbox = Outbox(folder / "terminal.db")
        self.password = secrets.token_urlsafe(16)
        self.broker = broker
        self.link_down = False
        self.uplink: Uplink

    def connect(self) -> None:
        self.uplink = Uplink(self.device_id, self.outbox, host="127.0.0.1",
                             port=self.broker.port, password=self.password)
        self.uplink.start()

    def set_link(self, up: bool) -> None:
        self.link_down = not up
        self.uplink.set_link(up)

    def figures(self) -> dict[str, int]:
        return {"made": self.outbox.last_seq, "acknowledged": self.outbox.acked_through,
                "backlog": self.outbox.backlog()}


class ServiceDesk(SimTerminal):
    """The counter (服务台): issues cards and sells visit packages for cash, on the same
    tap runner as the gates (intent journal, tear-safe commit, records signed there)."""

    def __init__(self, workdir: Path, broker: Broker, keys: ChainKeys,
                 config: TerminalConfig) -> None:
        super().__init__("desk-01", "handheld", workdir, broker)
        self.runner = TapRunner(
            self.identity, self.outbox, IntentJournal(self.outbox), keys,
            config=lambda: config, denylist=frozenset,
            offline=lambda: False,  # the desk's records are made online, as before
            operator="desk")
        self.sold = 0
        self._lock = threading.RLock()

    def _run(self, card: MifareClassic1K, operation, *args, **kwargs) -> None:
        result = self.runner.run(card, operation, *args, **kwargs)
        if not result.ok:
            raise RuntimeError(f"desk operation failed: {result.reason}")
        if hasattr(self, "uplink"):
            self.uplink.notify()

    def issue_card(self, card: MifareClassic1K, card_id: str, packages: int) -> None:
        with self._lock:
            self._run(card, issue, card_id=card_id, card_product="swim-card")
            self.add_visits(card, packages)

    def add_visits(self, card: MifareClassic1K, packages: int = 1) -> None:
        with self._lock:
            self._run(card, add_visits, PRODUCT, packages)
            self.sold += packages

    def figures(self) -> dict[str, int]:
        return {**super().figures(), "packages_sold": self.sold}


class SimGate(SimTerminal):
    """A gate with a reader; members walk up now and then and tap their card.

    A tap is the runtime's gate path: :meth:`TapRunner.run` with ``take_visit``
    to be served, then :meth:`TapRunner.served` once the gate opened. The records
    are flagged offline while the gate has no broker connection (gate-03's outage).
    """

    def __init__(self, index: int, workdir: Path, broker: Broker, keys: ChainKeys,
                 config: TerminalConfig, members: list[Member], desk: ServiceDesk,
                 tap_rate: float) -> None:
        super().__init__(f"gate-{index:02d}", "gate", workdir, broker)
        self.runner = TapRunner(
            self.identity, self.outbox, IntentJournal(self.outbox), keys,
            config=lambda: config, denylist=frozenset,
            offline=lambda: not self.uplink.connected.is_set())
        self.members = members
        self.desk = desk
        self.tap_rate = tap_rate
        self.taps = self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tap_loop, name=self.device_id, daemon=True)

    def start_tapping(self) -> None:
        self._thread.start()

    def stop_tapping(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _tap_loop(self) -> None:
        rng = random.Random(self.device_id)
        while not self._stop.wait(rng.expovariate(self.tap_rate)):
            member = rng.choice(self.members)
            if not member.hand.acquire(blocking=False):
                continue  # that member is at another gate right now
            try:
                result = self.tap(member.card)
                self.taps += 1
                if result.records:
                    self.uplink.notify()
                if result.ok:
                    continue
                self.refused += 1
                if result.refusal is not None and result.refusal.reason is RefusalReason.EXHAUSTED:
                    self.desk.add_visits(member.card)  # off to the desk for more swims
            finally:
                member.hand.release()

    def tap(self, card: MifareClassic1K) -> TapResult:
        """One visit: run it crash-safely, open the gate if paid, then mark it served."""
        try:
            result = self.runner.run(card, take_visit, serve=True)
        except CardRemoved:  # the card left before anything was decided: not charged
            return TapResult(False, "card removed", retry=True)
        except ReaderError as exc:  # wrong keys, refused access, reader gone: not charged
            return TapResult(False, f"card error: {exc}")
        if result.ok:
            self.runner.served(result)  # the turnstile turned
        return result

    def figures(self) -> dict[str, int]:
        return {**super().figures(), "taps": self.taps, "refused": self.refused}


def _start_hq(db_url: str, broker: Broker, password: str, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, ONECARD_HQ_BROKER_PASSWORD=password)
    return subprocess.Popen(
        [sys.executable, "-m", "onecard.cli", "hq", "run", "--db", db_url,
         "--broker-port", str(broker.port)],
        env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("ab"),
        start_new_session=True,  # Ctrl-C stops the taps; HQ keeps ingesting the drain
    )


def run_demo(config: DemoConfig) -> dict:
    workdir = Path(config.workdir or tempfile.mkdtemp(prefix="onecard-demo-"))
    db_url = f"sqlite:///{workdir / 'hq.db'}"
    engine = open_engine(db_url)
    # HQ judges prices and bonus tiers by the same catalogue the demo pushes to its gates.
    set_catalogue(engine, CATALOGUE)
    hq_password = secrets.token_urlsafe(16)
    keys = ChainKeys(CHAIN_ID, read_master=secrets.token_bytes(16),
                     write_master=secrets.token_bytes(16), mac_master=secrets.token_bytes(16))
    broker = Broker({HQ_USER: hq_password}).start()
    desk = ServiceDesk(workdir, broker, keys, gate_config())
    rng = random.Random(7)
    members = []
    for n in range(config.members):
        card = MifareClassic1K.blank(rng.randbytes(4))
        desk.issue_card(card, f"M{n:05d}", packages=1)
        members.append(Member(card))
    gate_cfg = gate_config()
    gates = [SimGate(i + 1, workdir, broker, keys, gate_cfg, members, desk, config.tap_rate)
             for i in range(config.gates)]
    terminals: list[SimTerminal] = [desk, *gates]
    # The chain first: terminals are registered for a store HQ knows.
    create_store(engine, SYSTEM, STORE, "Demo pool", now_ms=system_clock())
    for t in terminals:
        add_device(engine, t.device_id, t.identity.public_key_hex, STORE, t.role)
        broker.add_user(t.device_id, t.password)
    broker.reload()
    hq = _start_hq(db_url, broker, hq_password, workdir / "hq.log")
    for t in terminals:
        t.connect()
    for g in gates:
        g.start_tapping()

    duration = config.duration
    outage = config.outage if config.outage is not None else (duration or 30.0) / 3
    flaky = gates[-1]
    started = time.monotonic()
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    view = None if config.headless else _LiveView(terminals, engine)
    try:
        if view:
            view.start()
        outage_from = (duration or 30.0) / 3
        while not interrupted.is_set():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            if not flaky.link_down and outage_from <= elapsed < outage_from + outage:
                flaky.set_link(False)
            elif flaky.link_down and elapsed >= outage_from + outage:
                flaky.set_link(True)
            if view:
                view.refresh(elapsed, "tapping")
            time.sleep(0.2)
        for g in gates:
            g.stop_tapping()
            if g.link_down:
                g.set_link(True)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline and any(t.outbox.backlog() for t in terminals):
            if view:
                view.refresh(time.monotonic() - started, "draining")
            time.sleep(0.2)
        if view:
            view.refresh(time.monotonic() - started, "done")
    finally:
        signal.signal(signal.SIGINT, previous)
        if view:
            view.stop()
        for t in terminals:
            t.uplink.stop()
        hq.send_signal(signal.SIGTERM)
        try:
            hq.wait(timeout=10)
        except subprocess.TimeoutExpired:
            hq.kill()
        broker.stop()

    figures = ingest_figures(engine)
    check = check_ledger(engine)
    reconcile_due(engine, limit=1_000_000)  # whatever HQ had not reached when it stopped
    return {
        "records_made": sum(t.outbox.last_seq for t in terminals),
        "records_ledgered": figures["records_ledgered"],
        "ledger_balanced": check.balanced,
        "duplicates_rejected": figures["duplicates_rejected"],
        "quarantined": figures["quarantined"],
        "asset_totals": check.asset_totals,
        "anomalies": anomaly_counts(engine),
        "devices": {t.device_id: t.figures() for t in terminals},
        "outage_device": flaky.device_id,
        "outage_seconds": outage,
        "workdir": str(workdir),
    }


def figures_add_up(report: dict) -> bool:
    """The demo's promise: every record made is in HQ's ledger, the ledger balances, and
    no terminal holds anything back (outage and all)."""
    return (report["records_made"] == report["records_ledgered"] and report["ledger_balanced"]
            and all(d["backlog"] == 0 for d in report["devices"].values()))


class _LiveView:
    """A live table of the fleet in the terminal (rich)."""

    def __init__(self, terminals: list[SimTerminal], engine) -> None:
        from rich.console import Console
        from rich.live import Live

        self.terminals = terminals
        self.engine = engine
        self.live = Live(console=Console(), refresh_per_second=4, transient=False)

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.stop()

    def refresh(self, elapsed: float, phase: str) -> None:
        from rich.table import Table

        figures = ingest_figures(self.engine)
        table = Table(title=f"OneCard demo — {phase}, {elapsed:5.1f} s  (Ctrl-C stops the taps)")
        for col in ("terminal", "link", "taps (refused)", "records made", "acked by HQ",
                    "backlog"):
            table.add_column(col, justify="right" if col != "terminal" else "left")
        for t in self.terminals:
            f = t.figures()
            link = "[red]down[/red]" if t.link_down else (
                "[green]up[/green]" if t.uplink.connected.is_set() else "[yellow]…[/yellow]")
            backlog = f"[bold red]{f['backlog']}[/bold red]" if f["backlog"] > 20 else str(f["backlog"])
            activity = (f"{f['taps']} ({f['refused']})" if "taps" in f
                        else f"{f['packages_sold']} sold")
            table.add_row(t.device_id, link, activity, str(f["made"]), str(f["acknowledged"]),
                          backlog)
        table.caption = (f"HQ ledger: {figures['records_ledgered']} records, "
                         f"{figures['duplicates_rejected']} duplicates rejected, "
                         f"{figures['quarantined']} quarantined")
        self.live.update(table)
