"""A OneCard broker site on disk: CAs, HQ's broker, HQ's credentials, store brokers.

``onecard broker init ROOT`` lays out::

    ROOT/site.json     ports and host names, read by the other commands
    ROOT/pki/          the two CA keys and the revocation lists' sources (0700, root only;
                       never handed to mosquitto, never copied to a store)
    ROOT/broker/       HQ's broker: config, ACL, CA certificates, server key and
                       certificate, CRLs, state/ (owned by the mosquitto user)
    ROOT/hq/           HQ's own credentials: service client certificate (hq@onecard),
                       the HTTPS API's server certificate, the device CA certificate

A store broker folder (``onecard broker store-init``) holds only public certificates,
its own server key and its bridge key: a stolen store box reveals no CA.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509

from broker_config import pki
from broker_config.render import (
    BRIDGE_USER,
    HQ_USER,
    MtlsBrokerFiles,
    hand_to_broker_user,
    render_mtls_broker,
    render_store_broker,
)

DEVICE_CA = "device-ca"
SERVICE_CA = "service-ca"


@dataclass
class SiteConfig:
    hostnames: list[str]
    device_port: int = 8883
    service_port: int = 8884
    device_bind: str = "0.0.0.0"
    service_bind: str = "127.0.0.1"
    api_hostnames: list[str] | None = None


@dataclass(frozen=True)
class Site:
    """Paths of one site folder made by :func:`init_site`."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def hq(self) -> Path:
        return self.root / "hq"

    @property
    def config(self) -> SiteConfig:
        return SiteConfig(**json.loads((self.root / "site.json").read_text()))

    @property
    def broker(self) -> MtlsBrokerFiles:
        c = self.config
        return MtlsBrokerFiles(self.root / "broker", c.device_port, c.service_port,
                               c.device_bind, c.service_bind)

    # HQ's credentials
    hq_service_cert = property(lambda self: self.hq / "hq-service.pem")
    hq_service_key = property(lambda self: self.hq / "hq-service.key")
    api_cert = property(lambda self: self.hq / "api.pem")
    api_key = property(lambda self: self.hq / "api.key")
    device_ca_cert = property(lambda self: self.hq / "device-ca.pem")

    def device_ca(self) -> pki.Authority:
        return pki.Authority.load(self.pki, DEVICE_CA)

    def service_ca(self) -> pki.Authority:
        return pki.Authority.load(self.pki, SERVICE_CA)


def _write_pair(directory: Path, stem: str, key, cert) -> None:
    pki.write_secret(directory / f"{stem}.key", pki.key_pem(key))
    pki.write_public(directory / f"{stem}.pem", pki.cert_pem(cert))


def init_site(root: Path, config: SiteConfig) -> Site:
    """Make the CAs, HQ's broker folder and HQ's credentials. Never overwrites a CA."""
    site = Site(Path(root))
    if (site.pki / f"{DEVICE_CA}.key").exists():
        raise pki.PkiError(f"{site.pki} already holds a CA; refusing to replace it "
                           "(every enrolled device would have to enrol again)")
    site.root.mkdir(parents=True, exist_ok=True)
    os.chmod(site.root, 0o755)  # mosquitto must be able to reach broker/ below it
    site.pki.mkdir(mode=0o700, exist_ok=True)
    site.hq.mkdir(mode=0o700, exist_ok=True)
    (site.root / "site.json").write_text(json.dumps(asdict(config), indent=2))

    device_ca = pki.create_authority("OneCard device CA")
    service_ca = pki.create_authority("OneCard service CA")
    device_ca.save(site.pki, DEVICE_CA)
    service_ca.save(site.pki, SERVICE_CA)
    for name in ("revoked-devices.txt", "revoked-services.txt"):
        (site.pki / name).touch(mode=0o600)

    files = site.broker
    files.directory.mkdir(exist_ok=True)
    pki.write_public(files.device_ca, pki.cert_pem(device_ca.cert))
    pki.write_public(files.service_ca, pki.cert_pem(service_ca.cert))
    key, cert = pki.issue_server_cert(device_ca, config.hostnames)
    pki.write_public(files.server_cert, pki.cert_pem(cert))
    pki.write_secret(files.server_key, pki.key_pem(key))
    pki.write_public(files.device_crl, pki.make_crl(device_ca, []))
    pki.write_public(files.service_crl, pki.make_crl(service_ca, []))
    render_mtls_broker(files)

    pki.write_public(site.device_ca_cert, pki.cert_pem(device_ca.cert))
    _write_pair(site.hq, "hq-service", *pki.issue_client_cert(service_ca, HQ_USER))
    _write_pair(site.hq, "api", *pki.issue_server_cert(
        device_ca, config.api_hostnames or config.hostnames))
    return site


def issue_service_identity(site: Site, name: str, directory: Path) -> x509.Certificate:
    """Another HQ service certificate (``name`` must carry ``@``) into ``directory``."""
    if "@" not in name:
        raise pki.PkiError(f"service names carry an '@' (e.g. {HQ_USER}); got {name!r}")
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    key, cert = pki.issue_client_cert(site.service_ca(), name)
    _write_pair(Path(directory), name.split("@")[0], key, cert)
    return cert


def init_store_broker(site: Site, directory: Path, *, store: str, hostnames: list[str],
                      hq_host: str, device_port: int = 8883, device_bind: str = "0.0.0.0",
                      hq_service_port: int | None = None,
                      restart_timeout: tuple[int, int] = (5, 30)) -> MtlsBrokerFiles:
    """A store broker folder: its server certificate, bridge identity, CRL, config.

    Run at HQ (it needs the CAs), then copy the folder to the store's machine.
    """
    files = MtlsBrokerFiles(Path(directory), device_port, None, device_bind)
    files.directory.mkdir(parents=True, exist_ok=True)
    device_ca = site.device_ca()
    pki.write_public(files.device_ca, pki.cert_pem(device_ca.cert))
    key, cert = pki.issue_server_cert(device_ca, hostnames)
    pki.write_public(files.server_cert, pki.cert_pem(cert))
    pki.write_secret(files.server_key, pki.key_pem(key))
    bkey, bcert = pki.issue_client_cert(site.service_ca(), BRIDGE_USER)
    pki.write_public(files.bridge_cert, pki.cert_pem(bcert))
    pki.write_secret(files.bridge_key, pki.key_pem(bkey))
    pki.write_public(files.device_crl, site.broker.device_crl.read_bytes())
    (files.directory / "bridge.serial").write_text(f"{bcert.serial_number}\n")
    return render_store_broker(files, store=store, hq_host=hq_host,
                               hq_service_port=hq_service_port or site.config.service_port,
                               restart_timeout=restart_timeout)


# --- revocation -------------------------------------------------------------------------


def _read_serials(path: Path) -> set[int]:
    if not path.exists():
        return set()
    return {int(line) for line in path.read_text().split() if line.strip()}


def revoke(site: Site, serials: list[int], *, services: bool = False) -> Path:
    """Add certificate serials to the device (or service) CRL and write it for the broker.

    The running broker applies it on its next reload (:func:`reload_broker`); mosquitto
    2.0.11 re-reads ``crlfile`` on SIGHUP, which refuses new connections with a revoked
    certificate but leaves an open connection alone (see :func:`DeviceAuthority.disconnect`).
    """
    name = "revoked-services.txt" if services else "revoked-devices.txt"
    listed = _read_serials(site.pki / name) | set(serials)
    tmp = site.pki / (name + ".tmp")
    tmp.write_text("".join(f"{s}\n" for s in sorted(listed)))
    os.chmod(tmp, 0o600)
    os.replace(tmp, site.pki / name)
    ca = site.service_ca() if services else site.device_ca()
    files = site.broker
    target = files.service_crl if services else files.device_crl
    pki.write_public(target, pki.make_crl(ca, listed))
    hand_to_broker_user(files.directory)
    return target


def renew_crls(site: Site) -> None:
    """Re-sign both CRLs with a fresh validity (run monthly: an expired CRL locks out all)."""
    revoke(site, [])
    revoke(site, [], services=True)


def reload_broker(pid_file: Path) -> bool:
    """SIGHUP the broker whose pid is in ``pid_file``; False if it is not running."""
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True


# --- what HQ's enrolment uses ----------------------------------------------------------


class SiteDeviceCA:
    """HQ's view of the device CA on this site: sign, revoke, and cut a device off.

    :mod:`hq_server.devices.enrolment` takes any object with these methods; the CLI hands it
    this one. ``broker_host`` is where HQ reaches its broker's services listener.
    """

    def __init__(self, site: Site, broker_host: str = "127.0.0.1") -> None:
        self.site = site
        self.broker_host = broker_host

    def ca_pem(self) -> bytes:
        return self.site.device_ca_cert.read_bytes()

    def sign_device_csr(self, csr_pem: bytes, device_id: str) -> bytes:
        return pki.cert_pem(pki.sign_client_csr(self.site.device_ca(), csr_pem, device_id))

    def revoke_certificates(self, serials: list[int]) -> None:
        """Put the serials on the device CRL and make the running broker apply it."""
        revoke(self.site, serials)
        reload_broker(self.site.broker.pid_file)

    def disconnect(self, device_id: str, timeout: float = 10.0) -> bool:
        """Close the device's open connection and drop its broker session.

        A reloaded CRL only stops *new* connections. Devices connect with client id =
        device id (``use_username_as_clientid``), so HQ's service identity connecting
        with that client id takes the session over: mosquitto closes the device's
        connection, and a clean start with no session expiry drops what was queued.
        """
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id,
                             protocol=mqtt.MQTTv5)
        client.tls_set_context(service_tls_context(self.site))
        client.on_connect = lambda c, u, f, rc, p: rc.is_failure or connected.set()
        try:
            client.connect(self.broker_host, self.site.config.service_port, keepalive=10,
                           clean_start=True)
        except OSError:
            return False
        client.loop_start()
        try:
            return connected.wait(timeout)
        finally:
            client.disconnect()
            client.loop_stop()


def service_tls_context(site: Site) -> ssl.SSLContext:
    """TLS for HQ's services: trust the device CA (broker's server cert), present hq@onecard."""
    ctx = ssl.create_default_context(cafile=str(site.device_ca_cert))
    ctx.load_cert_chain(site.hq_service_cert, site.hq_service_key)
    return ctx
