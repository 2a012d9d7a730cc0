"""One terminal runtime for gates, staff handhelds and kiosks; the role is configuration.

:class:`Runtime` puts the parts together: the identity from enrolment, the outbox and
uplink, the local store with config, denylist, intent journal and offline UID usage,
presence and HQ's commands over the same MQTT connection, and the readers of the role.
It serves every tap alone (offline first) and talks to HQ when it can.

Roles:

* ``gate`` (:class:`GateRole`): an entry reader takes a visit (or accepts a time pass)
  and releases the turnstile for one passage; an exit reader opens for any valid card
  of ours (or always, ``gate.exit = "free"``); ID cards and QR codes on serial readers
  go through UID authorisation. Anti-passback works across the gate group through the
  card itself (:func:`protocol.card_ops.take_visit`).
* ``handheld`` (:class:`CounterRole`): checkout with items from the price list (member
  discount, cash for the shortfall), count deduction, recharge at the counter, card issue.
* ``kiosk`` (:class:`KioskEngine`): balance, recharge after payment, visit packages and
  passes — the engine the Kivy app drives.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from protocol.card_ops import (
    CheckoutLine,
    add_visits,
    check_denylist,
    debit,
    issue,
    open_account,
    recharge,
    sell_pass,
    take_visit,
)
from protocol.card_state import CardState
from protocol.fleet import (
    Command,
    CommandResult,
    TimeSample,
    command_result_topic,
    command_topic,
    desired_config_topic,
    reported_config_topic,
    time_request_topic,
    time_response_topic,
    uid_request_topic,
    uid_response_topic,
)
from protocol.keys import ChainKeys
from protocol.mifare import CardRemoved, MifareClassicLink, ReaderError
from protocol.record import Flag, Operation, SignedRecord, TransactionRecord
from protocol.terminal_config import TerminalConfig
from protocol.topics import (
    DENYLIST_DELTA_TOPIC,
    DENYLIST_SNAPSHOT_TOPIC,
    DenylistDelta,
    DenylistSnapshot,
    MessageError,
    ack_topic,
)
from terminal_fw.config_sync import ConfigSync
from terminal_fw.denylist import DeltaOutcome, Denylist
from terminal_fw.failpoints import failpoint
from terminal_fw.identity import DeviceIdentity, load_or_create
from terminal_fw.intent import CardTransactions, IntentJournal, TxResult
from terminal_fw.local_store import (
    DEFAULT_RESERVE_BYTES,
    LocalStore,
    StorageFull,
    disk_free_bytes,
    is_storage_full,
)
from terminal_fw.outbox import Outbox
from terminal_fw.presence import PresenceReporter
from terminal_fw.uid_auth import UidAuthoriser, credential_card_id
from terminal_fw.uplink import Uplink

log = logging.getLogger(__name__)

ROLES = ("gate", "handheld", "kiosk")
CHAIN_KEYS_FILE = "chain_keys.json"


def software_version() -> str:
    try:
        return metadata.version("onecard")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class RuntimeSettings:
    """Local settings of one terminal (``/etc/onecard/terminal.toml``); HQ's part of the
    configuration comes over MQTT (:mod:`terminal_fw.config_sync`)."""

    secrets_dir: Path
    data_dir: Path
    role: str | None = None  # default: the role HQ enrolled the terminal for
    device_id: str | None = None  # only without enrolment (development)
    store: str | None = None
    broker_host: str | None = None  # default: from enrolment
    broker_port: int | None = None
    broker_password: str | None = None  # password broker (development); else mutual TLS
    pcsc_entry: str | None = None  # reader name or prefix
    pcsc_exit: str | None = None
    uid_readers: list[dict[str, Any]] = field(default_factory=list)  # {port, kind, baudrate}
    gpio: dict[str, Any] | None = None  # GateWiring fields, or {"mock": true}
    admit_timeout_s: float = 8.0
    reserve_bytes: int = DEFAULT_RESERVE_BYTES
    store_max_pages: int | None = None  # a quota on the local store (tests fill it)
    resend_after_s: float = 5.0
    log_file: Path | None = None
    events: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> RuntimeSettings:
        """Read ``[terminal]``, ``[broker]``, ``[readers]`` and ``[gpio]`` of a TOML file."""
        import tomllib

        data = tomllib.loads(Path(path).read_text())
        t, b, r = data.get("terminal", {}), data.get("broker", {}), data.get("readers", {})
        values: dict[str, Any] = {
            "secrets_dir": Path(t.get("secrets", "/var/lib/onecard/secrets")),
            "data_dir": Path(t.get("data", "/var/lib/onecard/data")),
            "role": t.get("role"), "device_id": t.get("device_id"), "store": t.get("store"),
            "log_file": Path(t["log_file"]) if t.get("log_file") else None,
            "broker_host": b.get("host"), "broker_port": b.get("port"),
            "broker_password": os.environ.get(b["password_env"]) if b.get("password_env") else None,
            "pcsc_entry": r.get("pcsc_entry"), "pcsc_exit": r.get("pcsc_exit"),
            "uid_readers": list(r.get("uid", [])), "gpio": data.get("gpio"),
        }
        if "admit_timeout_s" in t:
            values["admit_timeout_s"] = float(t["admit_timeout_s"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def load_chain_keys(secrets_dir: Path) -> ChainKeys:
    """The chain's card master keys, installed in the secrets folder (never sent over MQTT)."""
    path = Path(secrets_dir) / CHAIN_KEYS_FILE
    try:
        data = json.loads(path.read_text())
        write = data.get("write_master")
        return ChainKeys(int(data["chain_id"]), bytes.fromhex(data["read_master"]),
                         bytes.fromhex(write) if write else None,
                         bytes.fromhex(data["mac_master"]))
    except FileNotFoundError:
        raise RuntimeError(f"{path} is missing: install the chain's card keys "
                           "(docs/deploy-terminal.md)") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise RuntimeError(f"{path} is not a valid chain key file: {exc}") from None


def write_chain_keys(secrets_dir: Path, keys: ChainKeys) -> None:
    path = Path(secrets_dir) / CHAIN_KEYS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"chain_id": keys.chain_id, "read_master": keys.read_master.hex(),
                   "write_master": keys.write_master.hex() if keys.write_master else None,
                   "mac_master": keys.mac_master.hex()}, f)


class Runtime:
    """Everything one terminal runs; :meth:`start` it, :meth:`stop` it cleanly."""

    def __init__(self, settings: RuntimeSettings, *, clock: Callable[[], float] = time.time,
                 pin_factory: Any = None) -> None:
        self.settings = settings
        self.clock = clock
        self.identity, self.role_name, host, port, tls = self._who_am_i(settings)
        if self.role_name not in ROLES:
            raise RuntimeError(f"unknown role {self.role_name!r} (one of {', '.join(ROLES)})")
        self.keys = load_chain_keys(settings.secrets_dir)
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(data / "terminal.db")
        self.store = LocalStore(data / "runtime.db", max_pages=settings.store_max_pages)
        self.config = ConfigSync(self.store, clock=clock)
        self.denylist = Denylist(self.store)
        self.journal = IntentJournal(self.outbox, clock=clock)
        if moved := self.journal.adopt(self.store):
            log.info("moved %d intents from the runtime store into the outbox's file", moved)
        self.maintenance = self.store.get("maintenance", "0") == "1"
        self.storage_alarm = ""
        self.clock_offset_ms = 0
        self.refused_messages = 0  # downlink messages a handler could not take
        self.readers: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = False

        device_id = self.identity.device_id
        password = settings.broker_password
        self.uplink = Uplink(device_id, self.outbox, host=host, port=port,
                             password=password or "", resend_after=settings.resend_after_s)
        if password is None and tls:
            from terminal_fw.enrolment import mqtt_tls_context

            self.uplink.client.tls_set_context(mqtt_tls_context(settings.secrets_dir))
        self.client = self.uplink.client
        self.uid = UidAuthoriser(
            self.store, publish=self._publish_uid_request, connected=self.online,
            caps=lambda: self.config.current.risk_caps,
            acked_through=lambda: self.outbox.acked_through,
            denylisted=lambda card_id: card_id in self.denylist, clock=clock)
        self.tx = CardTransactions(
            self.identity, self.outbox, self.journal, self.keys,
            config=lambda: self.config.current, denylist=self.denylist.cards,
            offline=lambda: not self.online(), guard=self.guard, clock=clock)
        self.presence = PresenceReporter(self.store, self.client, device_id,
                                         describe=self._describe, health=self._health,
                                         clock=clock)
        self.presence.attach()
        self._wire_mqtt()
        self.role: GateRole | CounterRole | KioskEngine = {
            "gate": GateRole, "handheld": CounterRole, "kiosk": KioskEngine,
        }[self.role_name](self, pin_factory=pin_factory)

    # --- identity ---------------------------------------------------------------------

    @staticmethod
    def _who_am_i(s: RuntimeSettings) -> tuple[DeviceIdentity, str, str, int, bool]:
        enrolment = Path(s.secrets_dir) / "enrolment.json"
        if enrolment.exists():
            from terminal_fw.enrolment import load_enrolment

            e = load_enrolment(s.secrets_dir)
            ident = load_or_create(s.secrets_dir, e.device_id, e.store)
            return (ident, s.role or e.role, s.broker_host or e.broker_host,
                    int(s.broker_port or e.broker_port), True)
        ident_file = Path(s.secrets_dir) / "identity.json"
        if not (s.device_id or ident_file.exists()):
            raise RuntimeError(f"{s.secrets_dir} holds no enrolment: run `onecard terminal enroll`")
        saved = json.loads(ident_file.read_text()) if ident_file.exists() else {}
        ident = load_or_create(s.secrets_dir, s.device_id or saved["device_id"],
                               s.store or saved.get("store", ""))
        if not s.broker_port:
            raise RuntimeError("no broker: enrol the terminal or set [broker] host and port")
        return ident, s.role or "gate", s.broker_host or "127.0.0.1", int(s.broker_port), False

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Runtime:
        self.tx.recover()
        self.uplink.start()
        self._spawn(self._housekeeping, "housekeeping")
        self.role.start()
        self.started = True
        self.emit("ready", role=self.role_name, config_version=self.config.current.version,
                  denylist_version=self.denylist.version, bdseq=self.presence.bdseq)
        return self

    def stop(self, clean: bool = True) -> None:
        """Stop serving; with ``clean`` tell HQ we go offline on purpose first."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.role.stop()
        if clean and self.uplink.connected.is_set():
            self.presence.publish_clean_death()
        self.uplink.stop()
        for t in self._threads:
            t.join(timeout=5)
        with self.tx.lock:  # a tap in progress finishes before the stores close
            self.outbox.close()
            self.store.close()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=f"{self.device_id}-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def emit(self, event: str, **data: Any) -> None:
        """A decision or state change, for the log and whoever watches (tests, a UI)."""
        log.info("%s %s", event, json.dumps(data, sort_keys=True, default=str))
        if self.settings.events is not None:
            self.settings.events({"event": event, **data})

    def online(self) -> bool:
        return self.uplink.connected.is_set()

    def guard(self) -> str | None:
        """Why the terminal must not take value right now, or None."""
        if self.maintenance:
            return "terminal in maintenance"
        free = disk_free_bytes(Path(self.settings.data_dir))
        if free < self.settings.reserve_bytes:
            self._alarm(f"disk nearly full: {free} bytes free")
        if self.storage_alarm:
            return f"local storage full, records cannot be kept: {self.storage_alarm}"
        return None

    def _alarm(self, why: str) -> None:
        if not self.storage_alarm:
            log.error("STORAGE ALARM: %s", why)
            self.emit("storage_alarm", reason=why)
        self.storage_alarm = why

    def check_storage(self, exc: BaseException) -> bool:
        """Turn a full-disk failure into the alarm; True if that is what it was."""
        if is_storage_full(exc):
            self._alarm(str(exc))
            return True
        return False

    def _housekeeping(self) -> None:
        while not self._stop.wait(min(1.0, max(0.2, self.config.current.heartbeat_s))):
            try:
                cfg = self.config.current
                if self.online() and self._heartbeat_due(cfg):
                    self.presence.publish_heartbeat()
                if cfg.version:
                    self.tx.report_unconfirmed(cfg.unconfirmed_report_after_s)
                if time.monotonic() - self._last_prune > 3600:
                    self._last_prune = time.monotonic()
                    self.journal.prune(int(self.clock() * 1000) - 7 * 86_400_000)
                if self.storage_alarm and disk_free_bytes(Path(self.settings.data_dir)) > \
                        2 * self.settings.reserve_bytes:
                    self._probe_storage()
            except Exception as exc:
                if not self.check_storage(exc):
                    log.exception("housekeeping round failed")

    _last_beat = 0.0
    _last_prune = 0.0

    def _heartbeat_due(self, cfg: TerminalConfig) -> bool:
        now = time.monotonic()
        if now - self._last_beat >= cfg.heartbeat_s:
            self._last_beat = now
            return True
        return False

    def _probe_storage(self) -> None:
        """Clear the alarm once a write succeeds again (space was freed)."""
        try:
            self.store.put("storage_probe", int(self.clock()))
        except StorageFull:
            return
        log.warning("storage alarm cleared")
        self.storage_alarm = ""
        self.emit("storage_ok")

    # --- MQTT ---------------------------------------------------------------------------

    def _wire_mqtt(self) -> None:
        c, dev = self.client, self.device_id
        uplink_on_connect = c.on_connect

        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            uplink_on_connect(client, userdata, flags, reason_code, properties)
            if reason_code.is_failure:
                return
            for topic in (desired_config_topic(dev), DENYLIST_SNAPSHOT_TOPIC, DENYLIST_DELTA_TOPIC,
                          uid_response_topic(dev), command_topic(dev), time_response_topic(dev)):
                client.subscribe(topic, qos=1)
            self.presence.publish_birth()
            self._publish_config_report()
            client.publish(time_request_topic(dev),
                           TimeSample(int(self.clock() * 1000)).to_json(), qos=0)
            self.emit("online", bdseq=self.presence.bdseq)

        c.on_connect = on_connect
        uplink_on_message = self.uplink._on_message

        def on_ack(client, userdata, message) -> None:
            self.uid.heard_from_hq()
            uplink_on_message(client, userdata, message)

        guarded = self._guarded
        c.message_callback_add(ack_topic(dev), guarded(on_ack))
        c.message_callback_add(desired_config_topic(dev), guarded(self._on_config))
        c.message_callback_add(DENYLIST_SNAPSHOT_TOPIC, guarded(self._on_denylist))
        c.message_callback_add(DENYLIST_DELTA_TOPIC, guarded(self._on_denylist))
        c.message_callback_add(uid_response_topic(dev),
                               guarded(lambda cl, u, m: self.uid.on_response(m.payload)))
        c.message_callback_add(command_topic(dev), guarded(self._on_command))
        c.message_callback_add(time_response_topic(dev), guarded(self._on_time))
        c.suppress_exceptions = True  # second line: paho logs, its thread lives on

    def _guarded(self, handler: Callable[[Any, Any, Any], None]) -> Callable[[Any, Any, Any], None]:
        """``handler`` on paho's network thread, which must outlive any message.

        An exception escaping a handler would end that thread: no more acks, config,
        denylist or UID answers, while taps go on offline. A full disk raises the storage
        alarm; anything else is logged with the topic and counted (``refused_messages``).
        """
        def guarded(client: Any, userdata: Any, message: Any) -> None:
            try:
                handler(client, userdata, message)
            except Exception as exc:
                if self.check_storage(exc):
                    return
                self.refused_messages += 1
                log.warning("message on %s refused: %s: %s", message.topic,
                            type(exc).__name__, str(exc)[:300])
        return guarded

    def _publish_config_report(self) -> None:
        self.client.publish(reported_config_topic(self.device_id),
                            self.config.report().to_json(), qos=1, retain=True)

    def _publish_uid_request(self, payload: bytes) -> bool:
        info = self.client.publish(uid_request_topic(self.device_id), payload, qos=1)
        return info.rc == 0

    def _on_config(self, client, userdata, message) -> None:
        if not message.payload:
            return  # HQ cleared the retained desired config: keep running what we have
        before = self.config.current.version
        try:
            report = self.config.offer(bytes(message.payload))
        except StorageFull as exc:
            self.check_storage(exc)
            return
        self._publish_config_report()
        if report.version != before:
            self.emit("config_applied", version=report.version)
            self.presence.publish_birth()  # HQ sees the new version at once
        elif report.refused_version:
            self.emit("config_refused", version=report.refused_version, error=report.error,
                      running=report.version)

    def _on_denylist(self, client, userdata, message) -> None:
        # (retained messages prove nothing about HQ being reachable: no heard_from_hq here)
        try:
            if message.topic == DENYLIST_SNAPSHOT_TOPIC:
                if not message.payload:
                    return
                changed = self.denylist.apply_snapshot(DenylistSnapshot.from_json(message.payload))
            else:
                outcome = self.denylist.apply_delta(DenylistDelta.from_json(message.payload))
                if outcome is DeltaOutcome.NEED_SNAPSHOT:
                    client.subscribe(DENYLIST_SNAPSHOT_TOPIC, qos=1)  # the retained copy again
                changed = outcome is DeltaOutcome.APPLIED
        except MessageError as exc:
            log.warning("ignoring denylist message: %s", exc)
            return
        except StorageFull as exc:
            self.check_storage(exc)
            return
        if changed:
            self.emit("denylist_applied", version=self.denylist.version)
            self.presence.publish_birth()

    def _on_time(self, client, userdata, message) -> None:
        try:
            sample = TimeSample.from_json(message.payload)
        except MessageError:
            return
        self.uid.heard_from_hq()
        now = int(self.clock() * 1000)
        if sample.hq_ms and 0 <= now - sample.device_ms < 10_000:
            self.clock_offset_ms = (sample.device_ms + now) // 2 - sample.hq_ms

    def _on_command(self, client, userdata, message) -> None:
        try:
            command = Command.from_json(message.payload)
        except MessageError as exc:
            log.warning("ignoring command: %s", exc)
            return
        self.uid.heard_from_hq()
        threading.Thread(target=self._run_command, args=(command,), daemon=True,
                         name=f"{self.device_id}-command").start()

    def _run_command(self, command: Command) -> None:
        try:
            ok, detail, data = self.execute(command)
        except Exception as exc:  # every command is answered, also when it fails
            log.exception("command %s failed", command.name)
            ok, detail, data = False, f"failed: {exc}", {}
        result = CommandResult(command.command_id, command.name, ok, detail, data)
        self.client.publish(command_result_topic(self.device_id), result.to_json(), qos=1)
        self.emit("command", name=command.name, ok=ok, detail=detail)

    def execute(self, command: Command) -> tuple[bool, str, dict[str, Any]]:
        """Carry out one command from HQ: (ok, detail, data)."""
        name, args = command.name, command.args
        if name == "sync_now":
            self.uplink.notify()
            self.client.subscribe(DENYLIST_SNAPSHOT_TOPIC, qos=1)
            self.client.subscribe(desired_config_topic(self.device_id), qos=1)
            self.presence.publish_heartbeat()
            return True, "uploading and re-reading config and denylist", {
                "outbox_depth": self.outbox.backlog(), "acked_through": self.outbox.acked_through}
        if name == "reload_config":
            self.client.subscribe(desired_config_topic(self.device_id), qos=1)
            return True, "config re-requested", {"running_version": self.config.current.version}
        if name == "open_gate":
            if not isinstance(self.role, GateRole):
                return False, f"a {self.role_name} has no gate", {}
            self.role.open_by_operator(str(args.get("operator", "hq")))
            return True, "gate released for one passage", {}
        if name == "maintenance":
            on = args.get("on")
            if not isinstance(on, bool):
                return False, "args.on must be true or false", {}
            self.maintenance = on
            self.store.put("maintenance", "1" if on else "0")
            return True, "maintenance " + ("on: taps refused" if on else "off"), {"maintenance": on}
        if name == "collect_logs":
            lines = args.get("lines", 100)
            if not isinstance(lines, int) or not 1 <= lines <= 500:
                return False, "args.lines must be 1..500", {}
            return True, "", {"lines": self._log_tail(lines)}
        return False, f"unknown command {name!r}", {}

    def _log_tail(self, lines: int) -> list[str]:
        path = self.settings.log_file or Path(self.settings.data_dir) / "terminal.log"
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64_000))
                tail = f.read().decode("utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return []
        out, size = [], 0
        for line in reversed(tail):  # keep the newest lines within the packet limit
            size += len(line) + 4
            if size > 40_000:
                break
            out.append(line[:500])
        return list(reversed(out))

    # --- presence figures -------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        return {"software_version": software_version()[:64], "role": self.role_name,
                "store": self.identity.store, "config_version": self.config.current.version,
                "denylist_version": self.denylist.version, "readers": dict(self.readers)}

    def _health(self) -> dict[str, Any]:
        oldest = self.outbox.oldest_pending_ms()
        now = int(self.clock() * 1000)
        readers = dict(self.readers)
        if self.storage_alarm:
            readers["storage"] = "full"
        if self.maintenance:
            readers["mode"] = "maintenance"
        return {"outbox_depth": self.outbox.backlog(),
                "oldest_unsent_age_ms": max(0, now - oldest) if oldest else 0,
                "last_ack_seq": self.outbox.acked_through,
                "disk_free_bytes": disk_free_bytes(Path(self.settings.data_dir)),
                "clock_offset_ms": self.clock_offset_ms, "readers": readers}

    # --- UID-only credentials -----------------------------------------------------------

    def uid_use(self, kind: str, credential: str, amount_fen: int, *, product: str = "",
                operator: str = "") -> tuple[bool, str, SignedRecord | None]:
        """Authorise one use of a UID-only credential and record it (before serving)."""
        cfg = self.config.current
        if cfg.version == 0:
            return False, "no configuration from HQ yet", None
        blocked = self.guard()
        if blocked:
            return False, blocked, None
        card_id = credential_card_id(kind, credential)
        with self.tx.lock:
            try:
                decision = self.uid.authorise(kind, credential, amount_fen,
                                              timeout=cfg.uid.online_timeout_s,
                                              next_seq=self.outbox.last_seq + 1)
                if not decision.approved:
                    return False, decision.reason, None
                flags = 0
                if decision.offline:
                    flags |= int(Flag.OFFLINE)
                if decision.under_cap:
                    flags |= int(Flag.UNDER_RISK_CAP)
                extra: dict[str, Any] = {"credential_kind": kind, "amount_fen": amount_fen}
                if decision.approval:
                    extra["approval"] = decision.approval
                record = TransactionRecord(
                    device_id=self.device_id, seq=1, prev_hash=bytes(32),
                    device_time_ms=int(self.clock() * 1000), card_id=card_id,
                    operation=Operation.UID_VISIT, store=self.identity.store, product=product,
                    operator=operator, flags=flags, extra=extra)
                signed = self.outbox.append(record, self.identity.signing_key)
            except Exception as exc:
                if self.check_storage(exc):
                    return False, f"local storage full: {exc}", None
                raise
        self.uplink.notify()
        return True, "", signed

    def card(self, link: MifareClassicLink, operation: Callable[..., Any], *args: Any,
             serve: bool = False, **kwargs: Any) -> TxResult:
        """One crash-safe card transaction; a full disk refuses it with the alarm raised."""
        try:
            result = self.tx.run(link, operation, *args, serve=serve, **kwargs)
        except CardRemoved:
            return TxResult(False, "card removed", retry=True)
        except Exception as exc:
            if self.check_storage(exc):
                return TxResult(False, f"local storage full: {exc}")
            raise
        if result.records:
            self.uplink.notify()
        return result


# --- readers ------------------------------------------------------------------------------


class _Role:
    """What all roles share: the PC/SC and serial reader loops feeding ``on_card``/``on_uid``."""

    def __init__(self, rt: Runtime, *, pin_factory: Any = None) -> None:
        self.rt = rt
        self.pin_factory = pin_factory
        self._pcsc: Any = None

    def start(self) -> None:
        s = self.rt.settings
        names = [n for n in (s.pcsc_entry, s.pcsc_exit) if n]
        if names:
            self.rt._spawn(lambda: self._pcsc_loop(names), "pcsc")
        for spec in s.uid_readers:
            self.rt._spawn(lambda spec=spec: self._serial_loop(spec), f"uid-{spec.get('port')}")

    def stop(self) -> None:
        pass

    def direction_of(self, reader: str) -> str:
        s = self.rt.settings
        if s.pcsc_exit and (reader == s.pcsc_exit or reader.startswith(s.pcsc_exit)):
            return "exit"
        return "entry"

    def _pcsc_loop(self, names: list[str]) -> None:
        from terminal_fw.readers.pcsc import PcscReaders

        readers = PcscReaders(names)
        self._pcsc = readers
        stop = self.rt._stop
        while not stop.is_set():
            try:
                present = readers.readers()
                for n in names:
                    self.rt.readers[f"pcsc:{self.direction_of(n)}"] = (
                        "ok" if any(r == n or r.startswith(n) for r in present) else "absent")
                events = readers.wait(0.5)
            except ReaderError as exc:
                for n in names:
                    self.rt.readers[f"pcsc:{self.direction_of(n)}"] = "error"
                log.warning("PC/SC: %s", exc)
                stop.wait(1.0)
                continue
            for event in events:
                if not event.present or stop.is_set():
                    continue
                try:
                    link = readers.connect(event.reader)
                except ReaderError as exc:
                    log.info("card on %s left before we could talk to it: %s", event.reader, exc)
                    continue
                try:
                    self.on_card(link, self.direction_of(event.reader))
                except ReaderError as exc:
                    self.rt.emit("refused", reason=f"reader error: {exc}", reader=event.reader)
                except Exception:
                    log.exception("tap on %s failed", event.reader)
                finally:
                    link.close()
        readers.close()

    def _serial_loop(self, spec: dict[str, Any]) -> None:
        from terminal_fw.readers.serial_uid import SerialUidReader

        port, kind = spec["port"], spec.get("kind", "qr")
        name = f"{kind}:{port}"
        stop = self.rt._stop
        while not stop.is_set():
            reader = SerialUidReader(port, kind, baudrate=int(spec.get("baudrate", 9600)))
            try:
                reader.open()
                self.rt.readers[name] = "ok"
                while not stop.is_set():
                    read = reader.read(0.5)
                    if read is not None:
                        try:
                            self.on_uid(read.kind, read.value)
                        except Exception:
                            log.exception("UID read on %s failed", port)
            except ReaderError as exc:
                self.rt.readers[name] = "absent"
                log.warning("%s: %s", name, exc)
                stop.wait(2.0)
            finally:
                reader.close()

    def on_card(self, link: MifareClassicLink, direction: str) -> None:
        """Default for roles driven by a UI: show what is on the card."""
        result = self.rt.card(link, check_denylist)
        self.rt.emit("card", ok=result.ok, reason=result.reason,
                     card=_summary(result.state) if result.state else None)

    def on_uid(self, kind: str, value: str) -> None:
        self.rt.emit("uid", kind=kind, credential_card=credential_card_id(kind, value))


def _summary(state: CardState) -> dict[str, Any]:
    return {"card_id": state.card_id, "purse_fen": state.purse_fen, "visits": dict(state.visits),
            "pass": state.pass_product, "pass_to_day": state.pass_to_day,
            "counter": state.counter, "blocked": state.blocked}


class GateRole(_Role):
    """Entry and exit readers, a turnstile relay, anti-passback across the gate group."""

    def __init__(self, rt: Runtime, *, pin_factory: Any = None) -> None:
        super().__init__(rt, pin_factory=pin_factory)
        from terminal_fw.gate_io import GateIO, GateWiring

        gpio = dict(rt.settings.gpio or {})
        mock = gpio.pop("mock", False)
        if mock and pin_factory is None:
            from gpiozero.pins.mock import MockFactory

            pin_factory = MockFactory()
        self.io = GateIO(GateWiring(**gpio), pin_factory=pin_factory,
                         admit_timeout=rt.settings.admit_timeout_s)
        self._admitting = threading.Lock()
        self.opened = 0

    def stop(self) -> None:
        if self._admitting.acquire(timeout=self.rt.settings.admit_timeout_s + 2):
            self._admitting.release()  # the passage in progress is over
        self.io.close()

    def _release(self) -> None:
        """Open the turnstile for one passage without holding up the readers."""
        self.opened += 1

        def admit() -> None:
            with self._admitting:
                try:
                    self.io.admit()
                except Exception:
                    log.exception("turnstile")

        threading.Thread(target=admit, daemon=True, name="admit").start()

    def open_by_operator(self, operator: str) -> None:
        self.rt.emit("gate_open", direction="entry", card=None, by=operator, free=True)
        self._release()

    def on_card(self, link: MifareClassicLink, direction: str) -> None:
        with self.rt.tx.lock:  # one tap at a time, and a shutdown waits for it
            self._tap(link, direction)

    def _tap(self, link: MifareClassicLink, direction: str) -> None:
        rt = self.rt
        cfg = rt.config.current
        if direction == "exit":
            if cfg.gate.exit == "free":
                rt.emit("gate_open", direction="exit", card=None, free=True)
                self._release()
                return
            result = rt.card(link, check_denylist)
            if result.ok:
                rt.emit("gate_open", direction="exit",
                        card=result.state.card_id if result.state else None, free=True)
                self._release()
            else:
                rt.emit("refused", direction="exit", reason=result.reason)
                self.io.refuse()
            return
        if cfg.version and not cfg.is_open(int(rt.clock() * 1000)):
            rt.emit("refused", direction="entry", reason="closed: outside opening hours")
            self.io.refuse()
            return
        result = rt.card(link, take_visit, serve=True)
        if not result.ok:
            rt.emit("refused", direction="entry", reason=result.reason, retry=result.retry,
                    card=result.state.card_id if result.state else None)
            self.io.refuse()
            return
        failpoint("tap:before_open")
        self._release()
        rt.tx.served(result)
        state = result.state
        rt.emit("gate_open", direction="entry", card=state.card_id if state else None,
                free=result.free, visits=dict(state.visits) if state else {},
                records=[s.record.seq for s in result.records])

    def on_uid(self, kind: str, value: str) -> None:
        rt = self.rt
        cfg = rt.config.current
        if cfg.version and not cfg.is_open(int(rt.clock() * 1000)):
            rt.emit("refused", direction="entry", reason="closed: outside opening hours")
            self.io.refuse()
            return
        ok, reason, signed = rt.uid_use(kind, value, cfg.uid.visit_amount_fen)
        card = credential_card_id(kind, value)
        if not ok:
            rt.emit("refused", direction="entry", reason=reason, card=card)
            self.io.refuse()
            return
        assert signed is not None
        rt.emit("gate_open", direction="entry", card=card, free=False,
                flags=signed.record.flags, records=[signed.record.seq])
        self._release()


class CounterRole(_Role):
    """A staff handheld at the counter: checkout, count deduction, recharge, card issue.

    Each method takes the link to the card on the handheld's reader (the staff app
    holds it while the member's card lies on the reader) and returns the transaction's
    result; the receipt may be printed once it returns ``ok`` (the records are durable).
    """

    def checkout(self, link: MifareClassicLink, items: list[tuple[str, int]], *,
                 operator: str = "", cash_for_shortfall: bool = True) -> TxResult:
        cfg = self.rt.config.current
        lines = []
        for sku, quantity in items:
            item = cfg.price(sku)
            if item is None:
                return TxResult(False, f"unknown item {sku!r} (not on the price list)")
            lines.append(CheckoutLine(item.category, item.unit_price_fen, quantity, sku))
        return self.rt.card(link, debit, lines, operator=operator,
                            cash_for_shortfall=cash_for_shortfall)

    def deduct_visit(self, link: MifareClassicLink, product: str, *,
                     operator: str = "") -> TxResult:
        """Take one visit of ``product`` at the counter (a sauna, a class)."""
        return self.rt.card(link, take_visit, operator=operator, accepts=(product,))

    def recharge(self, link: MifareClassicLink, paid_fen: int, *, operator: str = "") -> TxResult:
        return self.rt.card(link, recharge, paid_fen, operator=operator)

    def sell_visits(self, link: MifareClassicLink, product: str, packages: int = 1, *,
                    operator: str = "", pay_from_purse: bool = False) -> TxResult:
        return self.rt.card(link, add_visits, product, packages, operator=operator,
                            pay_from_purse=pay_from_purse)

    def issue_card(self, link: MifareClassicLink, card_id: str, card_product: str, *,
                   opening_fen: int | None = None, operator: str = "") -> TxResult:
        """Issue (发卡) and, for a stored-value product, open the purse (开户)."""
        result = self.rt.card(link, issue, card_id=card_id, card_product=card_product,
                              operator=operator)
        if not result.ok or opening_fen is None:
            return result
        opened = self.rt.card(link, open_account, opening_fen, operator=operator)
        return replace(opened, records=result.records + opened.records)


class KioskEngine(_Role):
    """What a member can do alone at a kiosk; the Kivy app calls these."""

    def balance(self, link: MifareClassicLink) -> TxResult:
        """The card as it stands (a denylisted card is blocked and refused)."""
        return self.rt.card(link, check_denylist)

    def recharge(self, link: MifareClassicLink, paid_fen: int, *, payment_ref: str = "") -> TxResult:
        """After the cash acceptor or the payment QR confirmed ``paid_fen``."""
        return self.rt.card(link, recharge, paid_fen, operator=f"kiosk:{payment_ref}"[:64])

    def buy_visits(self, link: MifareClassicLink, product: str, packages: int = 1, *,
                   pay_from_purse: bool = True) -> TxResult:
        return self.rt.card(link, add_visits, product, packages, pay_from_purse=pay_from_purse)

    def buy_pass(self, link: MifareClassicLink, pass_name: str, *,
                 pay_from_purse: bool = True) -> TxResult:
        return self.rt.card(link, sell_pass, pass_name, pay_from_purse=pay_from_purse)


def serve(settings: RuntimeSettings) -> None:
    """Run the terminal until SIGTERM/SIGINT (what ``onecard terminal run`` and systemd do).

    Logs go to stderr (the journal under systemd) and to ``terminal.log`` in the data
    folder, rotated, which is what HQ's ``collect_logs`` command reads back.
    """
    import logging.handlers
    import signal

    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    log_file = settings.log_file or data / "terminal.log"
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=1_000_000, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
    settings.log_file = log_file
    runtime = Runtime(settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    runtime.start()
    try:
        done.wait()
    finally:
        runtime.stop(clean=True)
