"""The demo: our broker, HQ, and a fleet of simulated gates with members tapping.

Everything runs on this machine: a mosquitto with OneCard's config on a free loopback
port, HQ ingest as its own process on a temporary SQLite ledger, and the gates in this
process, each with its own identity, outbox and MQTT connection. One gate loses its
broker connection for a while and catches up.
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
from dataclasses import dataclass
from pathlib import Path

from broker_config.render import HQ_USER
from broker_config.runner import Broker
from hq_server.devices import add_device
from hq_server.ledger import check_ledger, ingest_figures
from hq_server.schema import open_engine
from protocol.card_state import CardState
from simulators.count_card import SimCountCard
from terminal_fw.gate import Gate
from terminal_fw.identity import load_or_create
from terminal_fw.outbox import Outbox
from terminal_fw.uplink import Uplink

PRODUCT = "swim"
DRAIN_TIMEOUT = 120.0


@dataclass
class DemoConfig:
    gates: int = 3
    duration: float | None = None  # None: until Ctrl-C
    tap_rate: float = 4.0
    outage: float | None = None
    headless: bool = False
    members: int = 40
    workdir: Path | None = None


class SimGate:
    """One simulated gate: identity, outbox, uplink, and a member tapping now and then."""

    def __init__(self, index: int, workdir: Path, store: str, broker: Broker,
                 cards: list[SimCountCard], tap_rate: float) -> None:
        self.device_id = f"gate-{index:02d}"
        folder = workdir / self.device_id
        self.identity = load_or_create(folder / "secrets", self.device_id, store)
        self.outbox = Outbox(folder / "terminal.db")
        self.password = secrets.token_urlsafe(16)
        self.gate = Gate(self.identity, self.outbox, PRODUCT,
                         offline=lambda: not self.uplink.connected.is_set())
        self.broker = broker
        self.cards = cards
        self.tap_rate = tap_rate
        self.taps = self.refused = 0
        self.link_down = False
        self.uplink: Uplink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tap_loop, name=self.device_id, daemon=True)

    def connect(self) -> None:
        self.uplink = Uplink(self.device_id, self.outbox, host="127.0.0.1",
                             port=self.broker.port, password=self.password)
        self.uplink.start()

    def start_tapping(self) -> None:
        self._thread.start()

    def stop_tapping(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _tap_loop(self) -> None:
        rng = random.Random(self.device_id)
        while not self._stop.wait(rng.expovariate(self.tap_rate)):
            decision = self.gate.tap(rng.choice(self.cards))
            self.taps += 1
            if decision.opened:
                self.uplink.notify()
            else:
                self.refused += 1

    def set_link(self, up: bool) -> None:
        self.link_down = not up
        self.uplink.set_link(up)

    def figures(self) -> dict[str, int]:
        return {"made": self.outbox.last_seq, "acknowledged": self.outbox.acked_through,
                "backlog": self.outbox.backlog(), "taps": self.taps, "refused": self.refused}


def _start_hq(db_url: str, broker: Broker, password: str, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, ONECARD_HQ_BROKER_PASSWORD=password)
    return subprocess.Popen(
        [sys.executable, "-m", "onecard.cli", "hq", "run", "--db", db_url,
         "--broker-port", str(broker.port)],
        env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("ab"),
    )


def run_demo(config: DemoConfig) -> dict:
    workdir = Path(config.workdir or tempfile.mkdtemp(prefix="onecard-demo-"))
    db_url = f"sqlite:///{workdir / 'hq.db'}"
    engine = open_engine(db_url)
    hq_password = secrets.token_urlsafe(16)
    store = "store-01"
    cards = [SimCountCard(CardState(card_id=f"M{n:05d}", visits={PRODUCT: 10_000}))
             for n in range(config.members)]

    broker = Broker({HQ_USER: hq_password}).start()
    gates = [SimGate(i + 1, workdir, store, broker, cards, config.tap_rate)
             for i in range(config.gates)]
    for g in gates:
        add_device(engine, g.device_id, g.identity.public_key_hex, store)
        broker.add_user(g.device_id, g.password)
    broker.reload()
    hq = _start_hq(db_url, broker, hq_password, workdir / "hq.log")
    for g in gates:
        g.connect()
        g.start_tapping()

    duration = config.duration
    outage = config.outage if config.outage is not None else (duration or 30.0) / 3
    flaky = gates[-1]
    started = time.monotonic()
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    view = None if config.headless else _LiveView(gates, engine)
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
        while time.monotonic() < deadline and any(g.outbox.backlog() for g in gates):
            if view:
                view.refresh(time.monotonic() - started, "draining")
            time.sleep(0.2)
        if view:
            view.refresh(time.monotonic() - started, "done")
    finally:
        signal.signal(signal.SIGINT, previous)
        if view:
            view.stop()
        for g in gates:
            g.uplink.stop()
        hq.send_signal(signal.SIGTERM)
        try:
            hq.wait(timeout=10)
        except subprocess.TimeoutExpired:
            hq.kill()
        broker.stop()

    figures = ingest_figures(engine)
    check = check_ledger(engine)
    return {
        "records_made": sum(g.outbox.last_seq for g in gates),
        "records_ledgered": figures["records_ledgered"],
        "ledger_balanced": check.balanced,
        "duplicates_rejected": figures["duplicates_rejected"],
        "quarantined": figures["quarantined"],
        "asset_totals": check.asset_totals,
        "devices": {g.device_id: g.figures() for g in gates},
        "outage_device": flaky.device_id,
        "outage_seconds": outage,
        "workdir": str(workdir),
    }


class _LiveView:
    """A live table of the fleet in the terminal (rich)."""

    def __init__(self, gates: list[SimGate], engine) -> None:
        from rich.console import Console
        from rich.live import Live

        self.gates = gates
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
        for col in ("gate", "link", "taps", "records made", "acked by HQ", "backlog"):
            table.add_column(col, justify="right" if col != "gate" else "left")
        for g in self.gates:
            f = g.figures()
            link = "[red]down[/red]" if g.link_down else (
                "[green]up[/green]" if g.uplink.connected.is_set() else "[yellow]…[/yellow]")
            backlog = f"[bold red]{f['backlog']}[/bold red]" if f["backlog"] > 20 else str(f["backlog"])
            table.add_row(g.device_id, link, str(f["taps"]), str(f["made"]), str(f["acknowledged"]),
                          backlog)
        table.caption = (f"HQ ledger: {figures['records_ledgered']} records, "
                         f"{figures['duplicates_rejected']} duplicates rejected, "
                         f"{figures['quarantined']} quarantined")
        self.live.update(table)
