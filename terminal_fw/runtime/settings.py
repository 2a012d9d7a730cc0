"""A terminal's local settings and the chain-key file installed beside its secrets.

Everything here is read once at start from the terminal's own disk
(``/etc/onecard/terminal.toml`` and the secrets folder); HQ's part of the configuration
comes over MQTT (:mod:`terminal_fw.config_sync`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from protocol.keys import ChainKeys
from terminal_fw.local_store import DEFAULT_RESERVE_BYTES

#: What a terminal can be; the role comes from enrolment unless the settings name one.
ROLES = ("gate", "handheld", "kiosk")
CHAIN_KEYS_FILE = "chain_keys.json"
#: The gate's door back-ends (:mod:`terminal_fw.gate_io`, :mod:`terminal_fw.ioboard`).
GATE_IO = ("gpio", "ioboard")


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
    #: PN532 boards on a serial port (/dev/serial0 on the Pi's UART, a USB-serial adapter)
    pn532_entry: str | None = None
    pn532_exit: str | None = None
    uid_readers: list[dict[str, Any]] = field(default_factory=list)  # {port, kind, baudrate}
    gpio: dict[str, Any] | None = None  # GateWiring fields, or {"mock": true}
    #: The gate's door: "gpio" (the Pi's own pins, gpiozero) or "ioboard" (the RP2040
    #: I/O board on a UART, docs/ioboard.md), whose ``ioboard`` settings are {port, baudrate}.
    gate_io: str = "gpio"
    ioboard: dict[str, Any] | None = None
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
            "pn532_entry": r.get("pn532_entry"), "pn532_exit": r.get("pn532_exit"),
            "uid_readers": list(r.get("uid", [])), "gpio": data.get("gpio"),
            "gate_io": t.get("gate_io", "ioboard" if "ioboard" in data else "gpio"),
            "ioboard": data.get("ioboard"),
        }
        if "admit_timeout_s" in t:
            values["admit_timeout_s"] = float(t["admit_timeout_s"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["gate_io"] not in GATE_IO:
            raise ValueError(f"[terminal] gate_io must be one of {', '.join(GATE_IO)}")
        if values["gate_io"] == "ioboard" and not (values["ioboard"] or {}).get("port"):
            raise ValueError("gate_io = \"ioboard\" needs [ioboard] port (e.g. /dev/ttyAMA0)")
        return cls(**values)

    @property
    def log_path(self) -> Path:
        """Where the terminal's log goes (what HQ's ``collect_logs`` reads back)."""
        return self.log_file or Path(self.data_dir) / "terminal.log"


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
        raise RuntimeError(f"{path} is missing: HQ hands the card keys over when the "
                           "terminal joins (`onecard terminal join`, docs/deploy-terminal.md); "
                           "HQ must hold them first (`onecard hq card-keys init`)") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise RuntimeError(f"{path} is not a valid chain key file: {exc}") from None


def write_chain_keys(secrets_dir: Path, keys: ChainKeys) -> None:
    """Install the card keys atomically (a power cut during a rotation leaves the old or
    the new file, never a torn one)."""
    path = Path(secrets_dir) / CHAIN_KEYS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"chain_id": keys.chain_id, "read_master": keys.read_master.hex(),
                   "write_master": keys.write_master.hex() if keys.write_master else None,
                   "mac_master": keys.mac_master.hex()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
