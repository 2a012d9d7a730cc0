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
