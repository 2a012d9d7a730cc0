"""Joining a new terminal in one step: the line ``hq enrolment-token`` printed.

``onecard terminal join https://hq:8443 --token oce_... --ca-hash sha256:...`` does
everything a technician used to do by hand (docs/deploy-terminal.md):

1. fetch HQ's CA certificate and check it against the pinned hash (kubeadm's
   ``--discovery-token-ca-cert-hash``): nothing is copied to the SD card, and a
   man in the middle cannot pass its own CA, since its key would not hash to the pin;
2. enrol over TLS verified against that CA (:func:`terminal_fw.enrolment.enrol`);
3. put what the answer carries in place (:func:`apply_provision`): the card keys of the
   terminal's role (``chain_keys.json``, 0600), the store's current config (the terminal
   serves with it at once, no ``push-config`` needed) and HQ's time (the clock floor);
4. write the local settings (``/etc/onecard/terminal.toml``) and the systemd unit, and
   start the service (``--no-start`` leaves that to the caller: tests, a bench).

At each start the service *checks in* (:func:`check_in`): a request signed with the
device key over a fresh nonce, answered with the store's config, the card keys and
HQ's time. That is how a key rotation reaches every terminal and how a terminal
without a real-time clock learns the time before it serves.
"""

from __future__ import annotations

import json
import logging
import secrets as _secrets
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.enrolment import CA_PATH, CA_PIN_PREFIX, ca_pin, checkin_message, checkin_path
from terminal_fw.enrolment import Enrolled, EnrolmentFailed, _post, enrol, load_enrolment
from terminal_fw.identity import KEY_FILE, write_private
from terminal_fw.trusted_clock import TrustedClock

log = logging.getLogger(__name__)

PINNED_CA = "hq-ca.pem"  # HQ's CA as the join line pinned it; HTTPS to HQ trusts it alone
SERVICE = "onecard-terminal.service"
DEFAULT_SECRETS = Path("/var/lib/onecard/secrets")
DEFAULT_DATA = Path("/var/lib/onecard/data")
DEFAULT_SETTINGS = Path("/etc/onecard/terminal.toml")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class Joined:
    enrolled: Enrolled
    settings_file: Path
    unit_file: Path
    config_version: int
    started: bool


# --- the pinned CA ------------------------------------------------------------------------


def fetch_pinned_ca(hq_url: str, pin: str, timeout: float = 30.0) -> bytes:
    """HQ's CA certificate, if its key hashes to ``pin``; EnrolmentFailed otherwise.

    The first request cannot verify HQ (we hold no CA yet), so it carries nothing
    secret; the pin is what makes its answer trustworthy.
    """
    if not pin.startswith(CA_PIN_PREFIX) or len(pin) != len(CA_PIN_PREFIX) + 64:
        raise EnrolmentFailed(f"--ca-hash must be {CA_PIN_PREFIX}<64 hex digits>", "bad_pin")
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    answer = _post(hq_url, CA_PATH, None, None, timeout, context=unverified)
    pem = str(answer.get("ca", "")).encode()
    try:
        got = ca_pin(pem)
    except ValueError:
        raise EnrolmentFailed("HQ's answer holds no CA certificate", "bad_answer") from None
    if got != pin.lower():
        raise EnrolmentFailed(f"HQ's CA does not match the pinned hash (got {got}): "
                              "wrong address, or someone in between; nothing was sent",
                              "ca_mismatch")
    return pem


# --- what HQ hands over ---------------------------------------------------------------


def apply_provision(secrets_dir: Path, data_dir: Path, provision: dict[str, Any]) -> int:
    """Put card keys, the store's config and HQ's time in place; returns the config
    version the terminal now runs (0: HQ holds no config for the store yet)."""
    from terminal_fw.config_sync import ConfigSync
    from terminal_fw.local_store import LocalStore

    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    if provision.get("card_keys"):
        write_card_keys(secrets_dir, provision["card_keys"])
    if provision.get("hq_time_ms"):
        TrustedClock(data).set_from_hq(int(provision["hq_time_ms"]))
    store = LocalStore(data / "runtime.db")
    try:
        sync = ConfigSync(store)
        if provision.get("store_config"):
            report = sync.offer(provision["store_config"])
            if report.refused_version:
                log.error("the store's config was refused: %s", report.error)
        return sync.current.version
    finally:
        store.close()


def write_card_keys(secrets_dir: Path, keys: dict[str, Any]) -> None:
    """Install the card keys HQ handed over (``chain_keys.json``, 0600), replacing older
    ones: a rotation at HQ reaches the terminal at its next check-in."""
    from protocol.keys import ChainKeys
    from terminal_fw.runtime.settings import write_chain_keys

    write = keys.get("write_master")
    write_chain_keys(secrets_dir, ChainKeys(
        int(keys["chain_id"]), bytes.fromhex(keys["read_master"]),
        bytes.fromhex(write) if write else None, bytes.fromhex(keys["mac_master"])))


def check_in(secrets_dir: Path, timeout: float = 10.0) -> dict[str, Any]:
    """Ask HQ for the store's config, the card keys and the time (signed nonce)."""
    enrolled = load_enrolment(secrets_dir)
    if not enrolled.hq_url:
        raise EnrolmentFailed("this terminal was enrolled without HQ's address", "no_hq_url")
    key = serialization.load_pem_private_key((Path(secrets_dir) / KEY_FILE).read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    nonce = _secrets.token_hex(16)
    signature = key.sign(checkin_message(enrolled.device_id, nonce)).hex()
    ca = Path(secrets_dir) / PINNED_CA
    answer = _post(enrolled.hq_url, checkin_path(enrolled.device_id),
                   {"nonce": nonce, "signature": signature},
                   ca if ca.exists() else enrolled.ca_file, timeout)
    if answer.get("nonce") != nonce:
        raise EnrolmentFailed("HQ's check-in answer is not for this request", "bad_answer")
    return answer


# --- settings and the service -------------------------------------------------------------


def _toml(value: Any) -> str:
    return json.dumps(str(value))  # a TOML basic string is a JSON string for our values


def settings_text(secrets_dir: Path, data_dir: Path, *, pcsc_entry: str | None = None,
                  pcsc_exit: str | None = None,
                  uid_readers: list[dict[str, str]] = (), mock_gpio: bool = False) -> str:
    lines = ["# Written by `onecard terminal join`; HQ's part of the config comes over MQTT.",
             "[terminal]", f"secrets = {_toml(secrets_dir)}", f"data = {_toml(data_dir)}", "",
             "[readers]"]
    if pcsc_entry:
        lines.append(f"pcsc_entry = {_toml(pcsc_entry)}")
    if pcsc_exit:
        lines.append(f"pcsc_exit = {_toml(pcsc_exit)}")
    for reader in uid_readers:
        lines += ["[[readers.uid]]", f"port = {_toml(reader['port'])}",
                  f"kind = {_toml(reader['kind'])}"]
    if mock_gpio:
        lines += ["", "[gpio]", "mock = true"]
    return "\n".join(lines) + "\n"


def unit_text(settings_file: Path) -> str:
    """The systemd unit that runs the terminal from its settings, restarted on failure."""
    return f"""[Unit]
Description=OneCard terminal
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={sys.executable} -m onecard.cli terminal run --settings {settings_file}
Restart=always
RestartSec=2
# A tap in progress finishes before the stores close (SIGTERM is a clean stop).
KillSignal=SIGTERM
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


def install_service(unit_dir: Path, settings_file: Path, start: bool) -> Path:
    unit = Path(unit_dir) / SERVICE
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(unit_text(settings_file))
    if start:
        systemctl = shutil.which("systemctl")
        if systemctl is None:
            raise EnrolmentFailed(f"no systemctl here: unit written to {unit}; start the "
                                  f"terminal with `onecard terminal run --settings "
                                  f"{settings_file}`", "no_systemd")
        for args in (["daemon-reload"], ["enable", "--now", SERVICE]):
            done = subprocess.run([systemctl, *args], capture_output=True, text=True)
            if done.returncode:
                raise EnrolmentFailed(f"systemctl {' '.join(args)}: {done.stderr.strip()}",
                                      "service_failed")
    return unit


# --- the one step -----------------------------------------------------------------------


def join(hq_url: str, token: str, ca_hash: str, *, secrets_dir: Path = DEFAULT_SECRETS,
         data_dir: Path = DEFAULT_DATA, settings_file: Path = DEFAULT_SETTINGS,
         unit_dir: Path = DEFAULT_UNIT_DIR, start: bool = True, timeout: float = 30.0,
         **readers: Any) -> Joined:
    """Pin HQ's CA, enrol, install what HQ hands over, write settings and the service."""
    pem = fetch_pinned_ca(hq_url, ca_hash, timeout)
    secrets = Path(secrets_dir)
    secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(secrets / PINNED_CA, pem)
    enrolled = enrol(hq_url, token, secrets, ca_file=secrets / PINNED_CA, timeout=timeout,
                     need_card_keys=True)
    version = apply_provision(secrets, data_dir, enrolled.provision or {})
    settings = Path(settings_file)
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(settings_text(secrets, Path(data_dir), **readers))
    unit = install_service(unit_dir, settings, start)
    return Joined(enrolled, settings, unit, version, start)
