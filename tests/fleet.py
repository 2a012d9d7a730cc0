"""A small fleet for end-to-end tests: our broker, HQ as its own process, gates."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker_config.render import HQ_USER
from broker_config.runner import Broker
from hq_server.db.engine import open_engine
from hq_server.devices.registry import add_device
from hq_server.reports.figures import ingest_figures
from terminal_fw.identity import DeviceIdentity, load_or_create
from terminal_fw.outbox import Outbox
from terminal_fw.uplink import Uplink
from tests.hq_records import CountCard, VisitGate, count_card, known_store

STORE = "store-01"


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Terminal:
    identity: DeviceIdentity
    outbox: Outbox
    password: str
    uplink: Uplink | None = None
    gate: VisitGate | None = None

    @property
    def device_id(self) -> str:
        return self.identity.device_id


@dataclass
class Fleet:
    workdir: Path
    broker: Broker
    db_url: str
    hq_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    hq_procs: list[subprocess.Popen] = field(default_factory=list)
    terminals: list[Terminal] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = open_engine(self.db_url)

    @property
    def hq_log(self) -> Path:
        return self.workdir / "hq.log"

    def add_terminal(self, device_id: str, *, register: bool = True,
                     resend_after: float = 2.0) -> Terminal:
        ident = load_or_create(self.workdir / device_id / "secrets", device_id, STORE)
        term = Terminal(ident, Outbox(self.workdir / device_id / "terminal.db"),
                        secrets.token_urlsafe(12))
        if register:
            known_store(self.engine, STORE)
            add_device(self.engine, device_id, ident.public_key_hex, STORE)
        self.broker.add_user(device_id, term.password)
        self.broker.reload()
        term.uplink = Uplink(device_id, term.outbox, host="127.0.0.1", port=self.broker.port,
                             password=term.password, resend_after=resend_after)
        term.gate = VisitGate(ident, term.outbox, "swim")
        self.terminals.append(term)
        return term

    def start_hq(self, client_id: str = "hq-ingest-1", wait: bool = True) -> subprocess.Popen:
        """Start HQ ingest as its own process; by default wait until it is subscribed."""
        before = self.hq_log.read_text().count("subscribed") if self.hq_log.exists() else 0
        env = dict(os.environ, ONECARD_HQ_BROKER_PASSWORD=self.hq_password)
        proc = subprocess.Popen(
            [sys.executable, "-m", "onecard.cli", "hq", "run", "--db", self.db_url,
             "--broker-port", str(self.broker.port), "--client-id", client_id],
            env=env, stdout=subprocess.DEVNULL, stderr=self.hq_log.open("ab"),
        )
        self.hq_procs.append(proc)
        if wait:
            wait_for(lambda: self.hq_log.read_text().count("subscribed") > before,
                     timeout=30, what="HQ to subscribe")
        return proc

    def figures(self) -> dict[str, int]:
        return ingest_figures(self.engine)

    def raw_client(self, username: str, password: str, client_id: str) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.max_inflight_messages_set(100)
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        return client

    def close(self) -> None:
        for t in self.terminals:
            if t.uplink:
                t.uplink.stop()
        for p in self.hq_procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.broker.stop()


def member_card(n: int = 1, visits: int = 1000) -> CountCard:
    return count_card(f"M{n:05d}", visits)


def make_fleet(tmp_path: Path) -> Fleet:
    import tempfile

    hq_password = secrets.token_urlsafe(12)
    broker = Broker({HQ_USER: hq_password}, directory=Path(tempfile.mkdtemp(
        prefix="onecard-test-broker-"))).start()
    return Fleet(tmp_path, broker, f"sqlite:///{tmp_path / 'hq.db'}", hq_password=hq_password)
