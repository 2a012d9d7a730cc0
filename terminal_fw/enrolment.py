"""Enrolment on the terminal: earn an identity from HQ with a one-time token.

``onecard terminal enrol --hq URL --token T`` calls :func:`enrol`: it makes the
Ed25519 signing key (records) and an ECDSA P-256 MQTT client key (broker mTLS) in the
device's secrets directory, sends the public key, a CSR and the token to HQ over
HTTPS, and stores what comes back: the device id, store and role (``identity.json``,
read by :func:`terminal_fw.identity.load_or_create`), the client certificate, the CA
certificate, the broker address and the first config.

Secrets live in one directory, mode 0700, every file 0600. Keys never leave it and
nothing secret is logged: not the token, not a key. Keys are written before HQ is
asked, so a lost answer can be retried with a new token and the same keys.

Rolling keys (:func:`roll_keys`) writes the new keys beside the old ones, asks HQ with
a request signed by the old key, and only then swaps them in: a ``roll.commit`` marker
makes the swap finish on the next start if power is lost half-way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from protocol.enrolment import ENROL_PATH, roll_message, roll_path
from protocol.topics import DEVICE_ID
from terminal_fw.identity import IDENTITY_FILE, KEY_FILE, write_private
from terminal_fw.outbox import Outbox

log = logging.getLogger(__name__)

MQTT_KEY = "mqtt.key"
MQTT_CERT = "mqtt.pem"
CA_CERT = "ca.pem"
ENROLMENT_FILE = "enrolment.json"
ROLL_MARKER = "roll.commit"
PENDING = ".pending"  # suffix of keys made but not yet confirmed by HQ


class EnrolmentFailed(RuntimeError):
    """HQ refused or could not be reached; the message says why, without secrets."""

    def __init__(self, message: str, code: str = "unreachable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    store: str
    role: str
    broker_host: str
    broker_port: int
    config: dict[str, Any]
    secrets_dir: Path
    hq_url: str = ""
    #: What the enrolment answer carried beside the identity (store config, card keys,
    #: HQ's time); not kept in enrolment.json: terminal_fw.join puts each in its place.
    provision: dict[str, Any] | None = None

    @property
    def cert_file(self) -> Path:
        return self.secrets_dir / MQTT_CERT

    @property
    def key_file(self) -> Path:
        return self.secrets_dir / MQTT_KEY

    @property
    def ca_file(self) -> Path:
        return self.secrets_dir / CA_CERT


# --- files ------------------------------------------------------------------------------


def _secrets_dir(path: Path) -> Path:
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _pending_key(path: Path, make) -> bytes:
    """The PEM of a pending key at ``path``, made now if it is not there yet."""
    if path.exists():
        return path.read_bytes()
    pem = make().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    write_private(path, pem)
    return pem


def _new_keys(secrets: Path) -> tuple[Ed25519PrivateKey, ec.EllipticCurvePrivateKey]:
    signing = serialization.load_pem_private_key(
        _pending_key(secrets / (KEY_FILE + PENDING), Ed25519PrivateKey.generate), None)
    mqtt = serialization.load_pem_private_key(
        _pending_key(secrets / (MQTT_KEY + PENDING),
                     lambda: ec.generate_private_key(ec.SECP256R1())), None)
    assert isinstance(signing, Ed25519PrivateKey)
    assert isinstance(mqtt, ec.EllipticCurvePrivateKey)
    return signing, mqtt


def _csr(key: ec.EllipticCurvePrivateKey) -> str:
    """A CSR proving we hold ``key``; HQ sets the name, so we ask for none in particular."""
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "onecard-terminal")]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM).decode())


def _public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw).hex()


def _store_answer(secrets: Path, answer: dict[str, Any], hq_url: str) -> None:
    device_id = answer.get("device_id", "")
    if not DEVICE_ID.match(device_id):
        raise EnrolmentFailed(f"HQ answered with an invalid device id {device_id!r}", "bad_answer")
    x509.load_pem_x509_certificate(answer["certificate"].encode())  # refuse garbage early
    write_private(secrets / (MQTT_CERT + PENDING), answer["certificate"].encode())
    write_private(secrets / CA_CERT, answer["ca"].encode())
    write_private(secrets / ENROLMENT_FILE, json.dumps({
        "device_id": device_id, "store": answer["store"], "role": answer["role"],
        "broker": answer["broker"], "config": answer["config"], "hq_url": hq_url},
        indent=2).encode())


def _commit_pending(secrets: Path) -> None:
    """Swap pending keys and certificate in (idempotent, resumes after a power cut)."""
    marker = secrets / ROLL_MARKER
    write_private(marker, b"")
    for name in (MQTT_KEY, MQTT_CERT, KEY_FILE):
        pending = secrets / (name + PENDING)
        if pending.exists():
            os.replace(pending, secrets / name)
    fd = os.open(secrets, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    marker.unlink()


def load_enrolment(secrets_dir: Path) -> Enrolled:
    """What this terminal was told at enrolment (finishing an interrupted key roll)."""
    secrets = Path(secrets_dir)
    if (secrets / ROLL_MARKER).exists():
        _commit_pending(secrets)
    try:
        data = json.loads((secrets / ENROLMENT_FILE).read_text())
    except FileNotFoundError:
        raise EnrolmentFailed(f"{secrets} holds no enrolment: run `onecard terminal enrol`",
                              "not_enrolled") from None
    return Enrolled(data["device_id"], data["store"], data["role"], data["broker"]["host"],
                    int(data["broker"]["port"]), data["config"], secrets,
                    data.get("hq_url", ""))


def mqtt_tls_context(secrets_dir: Path) -> ssl.SSLContext:
    """TLS for the broker: trust HQ's device CA only, present this device's certificate."""
    enrolled = load_enrolment(secrets_dir)
    ctx = ssl.create_default_context(cafile=str(enrolled.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(enrolled.cert_file, enrolled.key_file)
    return ctx


# --- HTTPS ------------------------------------------------------------------------------


def _post(hq_url: str, path: str, body: dict[str, Any] | None, ca_file: Path | None,
          timeout: float, *, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """POST ``body`` (GET when it is None) to HQ over verified TLS, JSON both ways."""
    if not hq_url.startswith("https://"):
        raise EnrolmentFailed("HQ must be reached over https:// (the token and keys "
                              "would otherwise cross the network in the clear)", "bad_url")
    ctx = context or ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    request = urllib.request.Request(
        hq_url.rstrip("/") + path, method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())
        except ValueError:
            detail = {}
        if isinstance(detail, dict) and isinstance(detail.get("code"), str):
            # problem details (RFC 9457, docs/api.md): "code" is the problem type's name
            code = detail["code"].replace("-", "_")
            raise EnrolmentFailed(f"HQ refused: {str(detail.get('detail'))[:300]}", code) from None
        raise EnrolmentFailed(f"HQ refused the request (HTTP {exc.code}): "
                              f"{str(detail.get('detail', ''))[:300]}", f"http_{exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnrolmentFailed(f"cannot reach HQ at {hq_url}: {reason}") from None


# --- enrol and roll -----------------------------------------------------------------------


def enrol(hq_url: str, token: str, secrets_dir: Path, *, ca_file: Path | None = None,
          timeout: float = 30.0, need_card_keys: bool = False) -> Enrolled:
    """Enrol this terminal with a one-time token (see the module docstring).

    ``need_card_keys``: HQ refuses, leaving the token unspent, when it holds no card keys
    to hand over (a terminal joining in one step, :mod:`terminal_fw.join`)."""
    secrets = _secrets_dir(secrets_dir)
    if (secrets / KEY_FILE).exists() or (secrets / ENROLMENT_FILE).exists():
        raise EnrolmentFailed(f"{secrets} already holds an identity; roll its keys or "
                              "wipe the folder to enrol afresh", "already_enrolled")
    signing, mqtt_key = _new_keys(secrets)
    answer = _post(hq_url, ENROL_PATH, {"token": token, "public_key": _public_hex(signing),
                                        "csr": _csr(mqtt_key), "need_card_keys": need_card_keys},
                   ca_file, timeout)
    _store_answer(secrets, answer, hq_url)
    write_private(secrets / IDENTITY_FILE, json.dumps(
        {"device_id": answer["device_id"], "store": answer["store"]}).encode())
    _commit_pending(secrets)
    log.info("enrolled as %s (%s, store %s)", answer["device_id"], answer["role"],
             answer["store"])
    done = load_enrolment(secrets)
    return dataclasses.replace(done, provision={
        k: answer.get(k) for k in ("store_config", "card_keys", "hq_time_ms")})


def roll_keys(hq_url: str, secrets_dir: Path, *, outbox: Outbox | None = None,
              ca_file: Path | None = None, timeout: float = 30.0) -> Enrolled:
    """Replace the signing key and the MQTT key; HQ revokes the old ones at once.

    Refused (``EnrolmentFailed`` with code ``records_waiting``) while ``outbox`` holds
    records HQ has not acknowledged: they are signed with the current key, and once HQ
    revoked it they would be refused and their value lost to the ledger. Leave
    ``outbox`` out only for a terminal that has made no record yet.
    """
    waiting = outbox.backlog() if outbox is not None else 0
    if waiting:
        raise EnrolmentFailed(
            f"{waiting} records still wait for HQ's ack; they are signed with the current "
            "key and HQ would refuse them after the roll. Let the uplink drain first.",
            "records_waiting")
    current = load_enrolment(secrets_dir)
    secrets = current.secrets_dir
    old = serialization.load_pem_private_key((secrets / KEY_FILE).read_bytes(), None)
    assert isinstance(old, Ed25519PrivateKey)
    signing, mqtt_key = _new_keys(secrets)
    public_hex, csr = _public_hex(signing), _csr(mqtt_key)
    issued = int(time.time() * 1000)
    signature = old.sign(roll_message(current.device_id, public_hex, csr, issued)).hex()
    answer = _post(hq_url, roll_path(current.device_id), {
        "public_key": public_hex, "csr": csr, "issued_at_ms": issued, "signature": signature,
    }, ca_file or current.ca_file, timeout)
    if answer.get("device_id") != current.device_id:
        raise EnrolmentFailed("HQ answered for another device", "bad_answer")
    _store_answer(secrets, answer, current.hq_url or hq_url)
    _commit_pending(secrets)
    log.info("rolled keys of %s", current.device_id)
    return load_enrolment(secrets)
