"""Fill in the broker templates for one broker instance.

Mosquitto started as root drops to the ``mosquitto`` user, so everything it reads or
writes (config, password and ACL files, persistence and log folder) is handed to that
user when we run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from broker_config.plugin import install_plugin

TEMPLATES = Path(__file__).parent / "templates"

#: Service users carry an "@", which no device id may contain, so a device can never
#: take over a service's ACL by choosing its id.
HQ_USER = "hq@onecard"

#: HQ's ingest workers share the records through this MQTT 5 shared-subscription group
#: (``protocol.topics.ALL_RECORDS_SHARED``); no other identity may join it.
INGEST_SHARE_GROUP = "hq-ingest"

#: HQ (ingest, fleet service, API) reads everything devices send, through its share group
#: or directly, writes every device's downlink and the broadcasts. It reads no downlink.
SERVICE_ACL = {
    HQ_USER: [
        "topic read onecard/v1/dev/+/up/#",
        f"topic read $share/{INGEST_SHARE_GROUP}/onecard/v1/dev/+/up/#",
        "topic write onecard/v1/dev/+/down/#",
        "topic readwrite onecard/v1/broadcast/#",
    ],
}


@dataclass
class BrokerFiles:
    directory: Path
    port: int
    bind: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "state" / "mosquitto.log"


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """Write a Mosquitto password file (PBKDF2-SHA512 hashes) with ``mosquitto_passwd``."""
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        raise FileNotFoundError("mosquitto_passwd not found: install the mosquitto package")
    path.write_text("")
    for user, password in users.items():
        subprocess.run([exe, "-b", str(path), user, password], check=True,
                       capture_output=True)


def render_password_broker(directory: Path, port: int, users: dict[str, str],
                           bind: str = "127.0.0.1") -> BrokerFiles:
    """Write config, ACL and password file for a password-authenticated broker."""
    directory = Path(directory)
    state = directory / "state"
    state.mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(directory, port, bind, dict(users))
    render_acl(directory / "acl", SERVICE_ACL)
    write_password_file(directory / "passwords", users)
    conf = Template((TEMPLATES / "mosquitto-password.conf").read_text()).substitute(
        password_file=directory / "passwords",
        acl_file=directory / "acl",
        acl_plugin=install_plugin(directory),
        port=port,
        bind=bind,
        state_dir=state,
        log_file=files.log_file,
    )
    files.conf.write_text(conf)
    hand_to_broker_user(directory)
    return files


def hand_to_broker_user(directory: Path) -> None:
    """chown the broker's folder to ``mosquitto`` when we are root (it drops to that user)."""
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for root, _dirs, files in os.walk(directory):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
    parent = Path(directory).resolve().parent
    while parent != parent.parent:
        if not parent.stat().st_mode & 0o001:
            raise PermissionError(
                f"the mosquitto user cannot reach {directory}: {parent} is not traversable; "
                "put broker folders under /tmp or /var/lib"
            )
        parent = parent.parent


# --- production: mutual TLS ---------------------------------------------------------

#: Store brokers bridge to HQ under this identity (one certificate per store, each
#: revocable on its own by serial). It may carry any device's records up and any
#: device's replies down; HQ still checks every record's signature and topic. It may
#: not read records (no ingest share group, no up/ topics) nor write a downlink.
BRIDGE_USER = "bridge@onecard"

PRODUCTION_SERVICE_ACL = {
    **SERVICE_ACL,
    BRIDGE_USER: [
        "topic write onecard/v1/dev/+/up/#",
        "topic read onecard/v1/dev/+/down/#",
        "topic read onecard/v1/broadcast/#",
    ],
}


def render_acl(path: Path, service_acl: dict[str, list[str]]) -> None:
    """Write the ACL: device patterns from the template, then the named service users."""
    lines = []
    for user, rules in service_acl.items():
        lines.append(f"user {user}")
        lines.extend(rules)
        lines.append("")
    Path(path).write_text(Template((TEMPLATES / "acl").read_text()).substitute(
        service_users="\n".join(lines)))


@dataclass
class MtlsBrokerFiles:
    """Where one mutual-TLS broker's files are, and on which ports it listens."""

    directory: Path
    device_port: int
    service_port: int | None = None
    device_bind: str = "0.0.0.0"
    service_bind: str = "127.0.0.1"

    conf = property(lambda self: self.directory / "mosquitto.conf")
    acl = property(lambda self: self.directory / "acl")
    state = property(lambda self: self.directory / "state")
    log_file = property(lambda self: self.directory / "state" / "mosquitto.log")
    pid_file = property(lambda self: self.directory / "state" / "mosquitto.pid")
    device_ca = property(lambda self: self.directory / "device-ca.pem")
    service_ca = property(lambda self: self.directory / "service-ca.pem")
    server_cert = property(lambda self: self.directory / "server.pem")
    server_key = property(lambda self: self.directory / "server.key")
    device_crl = property(lambda self: self.directory / "devices.crl")
    service_crl = property(lambda self: self.directory / "services.crl")
    bridge_cert = property(lambda self: self.directory / "bridge.pem")
    bridge_key = property(lambda self: self.directory / "bridge.key")


def render_mtls_broker(files: MtlsBrokerFiles) -> MtlsBrokerFiles:
    """Write config and ACL for HQ's broker; the certificates must already be in place."""
    files.state.mkdir(parents=True, exist_ok=True)
    render_acl(files.acl, PRODUCTION_SERVICE_ACL)
    if files.service_port is None:
        raise ValueError("HQ's broker needs a services port")
    conf = Template((TEMPLATES / "mosquitto-mtls.conf").read_text()).substitute(
        acl_file=files.acl, acl_plugin=install_plugin(files.directory),
        device_port=files.device_port, device_bind=files.device_bind,
        service_port=files.service_port, service_bind=files.service_bind,
        device_ca=files.device_ca, service_ca=files.service_ca,
        server_cert=files.server_cert, server_key=files.server_key,
        device_crl=files.device_crl, service_crl=files.service_crl,
        state_dir=files.state, log_file=files.log_file,
    )
    files.conf.write_text(conf)
    hand_to_broker_user(files.directory)
    return files


def render_store_broker(files: MtlsBrokerFiles, *, store: str, hq_host: str,
                        hq_service_port: int, restart_timeout: tuple[int, int] = (5, 30),
                        ) -> MtlsBrokerFiles:
    """Write config and ACL for a store's broker bridged to HQ's services listener.

    The bridge certificate and key (``bridge.pem`` / ``bridge.key``, CN
    ``bridge@onecard`` from the service CA) must already be in the folder.
    """
    files.state.mkdir(parents=True, exist_ok=True)
    render_acl(files.acl, {})
    base, cap = restart_timeout
    conf = Template((TEMPLATES / "store-bridge.conf").read_text()).substitute(
        acl_file=files.acl, acl_plugin=install_plugin(files.directory),
        device_port=files.device_port, device_bind=files.device_bind,
        device_ca=files.device_ca, server_cert=files.server_cert, server_key=files.server_key,
        device_crl=files.device_crl, state_dir=files.state, log_file=files.log_file,
        bridge_name=f"bridge-{store}", hq_address=f"{hq_host}:{hq_service_port}",
        bridge_cert=files.bridge_cert, bridge_key=files.bridge_key,
        restart_base=base, restart_cap=cap,
    )
    files.conf.write_text(conf)
    hand_to_broker_user(files.directory)
    return files
