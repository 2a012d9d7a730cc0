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

TEMPLATES = Path(__file__).parent / "templates"

#: Service users carry an "@", which no device id may contain, so a device can never
#: take over a service's ACL by choosing its id.
HQ_USER = "hq@onecard"

SERVICE_ACL = {
    HQ_USER: [
        "topic read onecard/v1/dev/+/up/#",
        "topic read $share/+/onecard/v1/dev/+/up/#",
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
    service_lines = []
    for user, rules in SERVICE_ACL.items():
        service_lines.append(f"user {user}")
        service_lines.extend(rules)
        service_lines.append("")
    acl = Template((TEMPLATES / "acl").read_text()).substitute(
        service_users="\n".join(service_lines))
    (directory / "acl").write_text(acl)
    write_password_file(directory / "passwords", users)
    conf = Template((TEMPLATES / "mosquitto-password.conf").read_text()).substitute(
        password_file=directory / "passwords",
        acl_file=directory / "acl",
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
