"""Start our own Mosquitto on a free loopback port with OneCard's config.

Used by the tests, the demo and a single-machine install. The machine may already run
a default broker on 1883; it is not ours and we never use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from broker_config.render import BrokerFiles, MtlsBrokerFiles, render_password_broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_path() -> str:
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists(
        "/usr/sbin/mosquitto") else None)
    if exe is None:
        raise FileNotFoundError("mosquitto not found: install the mosquitto package (make setup)")
    return exe


class Broker:
    """One mosquitto process with a rendered OneCard config."""

    def __init__(self, users: dict[str, str], directory: Path | None = None,
                 port: int | None = None) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="onecard-broker-"))
        self.port = port or free_port()
        self.users = dict(users)
        self.files: BrokerFiles = render_password_broker(self.directory, self.port, self.users)
        self.proc: subprocess.Popen[bytes] | None = None

    def add_user(self, user: str, password: str) -> None:
        """Add a login; takes effect after :meth:`reload` (SIGHUP re-reads passwords)."""
        self.users[user] = password
        self.files = render_password_broker(self.directory, self.port, self.users)

    def reload(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)

    def start(self, timeout: float = 10.0) -> Broker:
        self.proc = subprocess.Popen(
            [mosquitto_path(), "-c", str(self.files.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C meant for the program that started the broker
            # must not kill it before that program has drained its terminals.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err} {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return self.files.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MtlsBroker(Broker):
    """One mosquitto process with a production (mutual TLS) config already rendered.

    ``port`` is the devices listener; :attr:`service_port` the services one (None for
    a store broker). :meth:`reload` sends SIGHUP: on mosquitto 2.0.11 that applies a
    new CRL and ACL to new connections; queue limits need :meth:`restart`.
    """

    def __init__(self, files: MtlsBrokerFiles) -> None:  # noqa: D107 - no password files
        self.mtls = files
        self.directory = files.directory
        self.port = files.device_port
        self.service_port = files.service_port
        self.users = {}
        self.files = BrokerFiles(files.directory, files.device_port)
        self.proc = None

    def add_user(self, user: str, password: str) -> None:
        raise TypeError("a mutual-TLS broker has no passwords: issue a certificate")

    def restart(self, timeout: float = 10.0) -> MtlsBroker:
        self.stop()
        self.start(timeout)
        return self

    def start(self, timeout: float = 10.0) -> MtlsBroker:
        super().start(timeout)
        if self.service_port is not None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", self.service_port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"services listener {self.service_port} not up") from None
                    time.sleep(0.05)
        return self
