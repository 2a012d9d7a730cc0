"""What a terminal and HQ agree on for enrolment: the API paths and the roll message.

The HTTP exchange itself is described by HQ's OpenAPI document (``/openapi.json``);
this module holds only what both sides must compute byte for byte.
"""

from __future__ import annotations

import hashlib

ENROL_PATH = "/v1/enrol"
#: The device's role is one of these; it decides what software the terminal runs.
ROLES = ("gate", "handheld", "kiosk")


def roll_path(device_id: str) -> str:
    return f"/v1/devices/{device_id}/roll"


def roll_message(device_id: str, public_key_hex: str, csr_pem: str, issued_at_ms: int) -> bytes:
    """The exact bytes a terminal signs with its *current* key to ask for a key roll.

    It binds the device, the new signing key, the CSR of the new MQTT key and a time,
    so a captured request cannot be bent to another key; once applied the old key is
    dead, so replaying it fails.
    """
    return b"\n".join([b"onecard-roll-v1", device_id.encode(), public_key_hex.lower().encode(),
                       hashlib.sha256(csr_pem.encode()).hexdigest().encode(),
                       str(int(issued_at_ms)).encode()])


# --- one-step join (kubeadm-style CA pin) and the signed check-in ----------------------

#: Unauthenticated: HQ's CA certificate, fetched by a new terminal and checked against
#: the pin in its join line before anything secret crosses (``kubeadm join
#: --discovery-token-ca-cert-hash`` does the same).
CA_PATH = "/v1/enrolment/ca"
CA_PIN_PREFIX = "sha256:"


def ca_pin(ca_pem: bytes) -> str:
    """``sha256:<hex>`` of the CA certificate's SubjectPublicKeyInfo (DER), as kubeadm pins.

    The public key, not the certificate, is pinned: a CA re-issued with the same key
    (a longer validity) keeps every printed join line valid.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return CA_PIN_PREFIX + hashlib.sha256(spki).hexdigest()


def checkin_path(device_id: str) -> str:
    return f"/v1/devices/{device_id}/checkin"


def checkin_message(device_id: str, nonce_hex: str) -> bytes:
    """The bytes a terminal signs with its signing key to check in at each start.

    No time in it (a terminal without a real-time clock does not know the time yet: the
    answer tells it); the nonce, echoed by HQ, binds the answer to this request.
    """
    return b"\n".join([b"onecard-checkin-v1", device_id.encode(), nonce_hex.lower().encode()])
