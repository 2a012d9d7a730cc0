"""Certificate tooling for the broker: the device CA, the service CA, certificates, CRLs.

Two authorities, so that a device certificate can never open the door meant for HQ:

* the **device CA** signs every terminal's MQTT client certificate (CN = device id,
  minted by HQ at enrolment, never chosen by the device) and the TLS server certificates
  of the brokers and of HQ's HTTPS API, so a terminal trusts exactly one anchor;
* the **service CA** signs the client certificates of HQ's own services (``hq@onecard``)
  and of store-broker bridges (``bridge@onecard``). Service names carry an ``@``, which
  no device id may contain, and only the broker's service listener trusts this CA.

Keys are ECDSA P-256 (known to work with mosquitto 2.0.11 and every TLS stack a
terminal may have). Each certificate says what it is for (extended key usage), so a
client certificate cannot pose as a server. Serial numbers are random (RFC 5280
allows 20 octets); revocation is by serial in a CRL the broker reads (``crlfile``).

This module imports nothing else of ours; HQ reaches it through an adapter the CLI
wires in (see :class:`DeviceCA`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long a CRL stays valid. OpenSSL refuses every client once the broker's CRL is
#: past its next-update time, so HQ re-issues it on every revocation and
#: ``onecard broker crl`` renews it; this is the slack before that matters.
CRL_VALIDITY = dt.timedelta(days=180)
DEVICE_CERT_VALIDITY = dt.timedelta(days=825)
CA_VALIDITY = dt.timedelta(days=3650)


class PkiError(ValueError):
    """A certificate request or file that cannot be used, with the reason in words."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_secret(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (0600), replacing any old file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def name(self) -> str:
        return self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    def save(self, directory: Path, stem: str) -> None:
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_secret(directory / f"{stem}.key", key_pem(self.key))
        write_public(directory / f"{stem}.pem", cert_pem(self.cert))

    @classmethod
    def load(cls, directory: Path, stem: str) -> Authority:
        directory = Path(directory)
        try:
            cert = x509.load_pem_x509_certificate((directory / f"{stem}.pem").read_bytes())
            key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(),
                                                     password=None)
        except FileNotFoundError as exc:
            raise PkiError(f"no CA {stem!r} in {directory}: run `onecard broker init` first "
                           f"({exc.filename} missing)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{directory / stem}.key is not an EC key")
        return cls(cert, key)


def create_authority(common_name: str, validity: dt.timedelta = CA_VALIDITY) -> Authority:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OneCard"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def _leaf(ca: Authority, subject_cn: str, public_key, *, server: bool,
          hostnames: Iterable[str] = (), validity: dt.timedelta) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OneCard"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + validity, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=server, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
    )
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def issue_server_cert(ca: Authority, hostnames: list[str],
                      validity: dt.timedelta = DEVICE_CERT_VALIDITY,
                      ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server certificate for a broker or HQ's API, valid for ``hostnames``."""
    if not hostnames:
        raise PkiError("a server certificate needs at least one host name or address")
    key = new_key()
    return key, _leaf(ca, hostnames[0], key.public_key(), server=True, hostnames=hostnames,
                      validity=validity)


def issue_client_cert(ca: Authority, common_name: str,
                      validity: dt.timedelta = DEVICE_CERT_VALIDITY,
                      ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A client certificate with a fresh key (services, bridges, tests)."""
    key = new_key()
    return key, _leaf(ca, common_name, key.public_key(), server=False, validity=validity)


def sign_client_csr(ca: Authority, csr_pem: bytes, common_name: str,
                    validity: dt.timedelta = DEVICE_CERT_VALIDITY) -> x509.Certificate:
    """Sign a client's CSR with the CN *we* choose; the CSR only lends its public key.

    The CSR must be self-signed by its key (proof that the requester holds it) and the
    key must be a kind every broker accepts (EC P-256/P-384, Ed25519, RSA >= 2048).
    Whatever subject or extensions the CSR asks for are ignored.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise PkiError("the CSR is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature does not match its key")
    pub = csr.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if pub.curve.name not in ("secp256r1", "secp384r1"):
            raise PkiError(f"EC curve {pub.curve.name} is not accepted (use P-256)")
    elif isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < 2048:
            raise PkiError("RSA keys under 2048 bits are not accepted")
    elif not isinstance(pub, ed25519.Ed25519PublicKey):
        raise PkiError(f"{type(pub).__name__} keys are not accepted (use EC P-256)")
    return _leaf(ca, common_name, pub, server=False, validity=validity)


def make_crl(ca: Authority, revoked_serials: Iterable[int],
             validity: dt.timedelta = CRL_VALIDITY) -> bytes:
    """A PEM CRL listing ``revoked_serials``; an empty one is valid and needed too."""
    now = _now()
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.cert.subject)
               .last_update(now - dt.timedelta(minutes=5))
               .next_update(now + validity))
    for serial in sorted(set(revoked_serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def revoked_serials(crl_pem: bytes) -> set[int]:
    crl = x509.load_pem_x509_crl(crl_pem)
    return {r.serial_number for r in crl}
