"""Topics and messages between HQ and one terminal's runtime, beside records and presence.

* **Config** works as a device shadow: HQ keeps the *desired* config of each terminal
  retained on ``.../down/config`` (a JSON document with a ``version``); the terminal
  answers with its *reported* state, retained on ``.../up/config/reported``: the version
  it runs and, when it refused a newer one, which and why.
* **UID authorisation**: a terminal asks HQ about a UID-only credential (ID card, QR
  code) on ``.../up/uid_auth/request`` and waits a bounded time for the answer on
  ``.../down/uid_auth/response``, matched by ``request_id``.
* **Commands**: HQ sends :class:`Command` on ``.../down/command``; every command is
  answered with a :class:`CommandResult` on ``.../up/command/result``, also when it is
  unknown or fails.
* **Clock**: the terminal sends its clock on ``.../up/time/request``; HQ echoes it with
  its own on ``.../down/time``, so the terminal can tell HQ its clock offset.

All topics sit under the device's ``up``/``down`` subtrees, which the broker's ACL
already grants (see ``broker_config/templates/acl``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from protocol.ids import ID_PATTERN
from protocol.messages import MessageError, int_field, load_object, str_field
from protocol.topics import ROOT, device_topic_root

_ID = re.compile(ID_PATTERN)  # the one id grammar (protocol.ids)

#: Commands a terminal understands (HQ → device).
COMMANDS = ("sync_now", "reload_config", "open_gate", "maintenance", "collect_logs")


def desired_config_topic(device_id: str) -> str:
    """HQ → device: the desired config document (JSON), retained, QoS 1."""
    return f"{device_topic_root(device_id)}/down/config"


def reported_config_topic(device_id: str) -> str:
    """Device → HQ: :class:`ConfigReport`, retained, QoS 1."""
    return f"{device_topic_root(device_id)}/up/config/reported"


def uid_request_topic(device_id: str) -> str:
    return f"{device_topic_root(device_id)}/up/uid_auth/request"


def uid_response_topic(device_id: str) -> str:
    return f"{device_topic_root(device_id)}/down/uid_auth/response"


def command_topic(device_id: str) -> str:
    return f"{device_topic_root(device_id)}/down/command"


def command_result_topic(device_id: str) -> str:
    return f"{device_topic_root(device_id)}/up/command/result"


def time_request_topic(device_id: str) -> str:
    return f"{device_topic_root(device_id)}/up/time/request"


def time_response_topic(device_id: str) -> str:
    return f"{device_topic_root(device_id)}/down/time"


ALL_UID_REQUESTS = f"{ROOT}/dev/+/up/uid_auth/request"
ALL_COMMAND_RESULTS = f"{ROOT}/dev/+/up/command/result"
ALL_CONFIG_REPORTS = f"{ROOT}/dev/+/up/config/reported"
ALL_TIME_REQUESTS = f"{ROOT}/dev/+/up/time/request"


def _int_or(d: dict[str, Any], key: str, what: str, default: int = 0) -> int:
    value = int_field(d, key, what, optional=True)
    return default if value is None else value


def _text(d: dict[str, Any], key: str, what: str, *, max_len: int = 200,
          required: bool = False) -> str:
    value = str_field(d, key, what, max_len=max_len)
    if required and not value:
        raise MessageError(f"malformed {what}: {key} is required")
    return value


def _ident(d: dict[str, Any], key: str, what: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not _ID.match(value):
        raise MessageError(f"malformed {what}: {key} must be 1..64 of A-Z a-z 0-9 _ . : -")
    return value


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ConfigReport:
    """What a terminal runs (``version``) and, if any, the newer version it refused."""

    version: int
    refused_version: int = 0
    error: str = ""
    time_ms: int = 0

    def to_json(self) -> bytes:
        return _dump(self.__dict__)

    @classmethod
    def from_json(cls, payload: bytes) -> ConfigReport:
        d = load_object(payload, "config report")
        return cls(int_field(d, "version", "config report"),
                   _int_or(d, "refused_version", "config report"),
                   _text(d, "error", "config report", max_len=500),
                   _int_or(d, "time_ms", "config report"))


@dataclass(frozen=True)
class UidAuthRequest:
    """May this UID-only credential be used for ``amount_fen`` (and one use) now?"""

    request_id: str
    credential: str  # the ID card's number or the QR code's text
    kind: str  # "em4100" or "qr"
    amount_fen: int
    purpose: str = "visit"
    time_ms: int = 0

    def to_json(self) -> bytes:
        return _dump(self.__dict__)

    @classmethod
    def from_json(cls, payload: bytes) -> UidAuthRequest:
        what = "uid auth request"
        d = load_object(payload, what)
        kind = _text(d, "kind", what, max_len=16, required=True)
        if kind not in ("em4100", "qr"):
            raise MessageError(f"malformed {what}: kind must be 'em4100' or 'qr'")
        return cls(_ident(d, "request_id", what), _text(d, "credential", what, max_len=128,
                                                        required=True),
                   kind, int_field(d, "amount_fen", what), _text(d, "purpose", what, max_len=32),
                   _int_or(d, "time_ms", what))


@dataclass(frozen=True)
class UidAuthResponse:
    request_id: str
    approved: bool
    reason: str = ""
    approval: str = ""  # HQ's reference for an approved use, kept in the record

    def to_json(self) -> bytes:
        return _dump(self.__dict__)

    @classmethod
    def from_json(cls, payload: bytes) -> UidAuthResponse:
        what = "uid auth response"
        d = load_object(payload, what)
        approved = d.get("approved")
        if not isinstance(approved, bool):
            raise MessageError(f"malformed {what}: approved must be true or false")
        return cls(_ident(d, "request_id", what), approved, _text(d, "reason", what),
                   _text(d, "approval", what, max_len=64))


@dataclass(frozen=True)
class Command:
    command_id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    time_ms: int = 0

    def to_json(self) -> bytes:
        return _dump({"command_id": self.command_id, "name": self.name, "args": self.args,
                      "time_ms": self.time_ms})

    @classmethod
    def from_json(cls, payload: bytes) -> Command:
        what = "command"
        d = load_object(payload, what)
        args = d.get("args", {})
        if not isinstance(args, dict):
            raise MessageError(f"malformed {what}: args must be an object")
        return cls(_ident(d, "command_id", what), _text(d, "name", what, max_len=32,
                                                        required=True),
                   args, _int_or(d, "time_ms", what))


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    name: str
    ok: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return _dump({"command_id": self.command_id, "name": self.name, "ok": self.ok,
                      "detail": self.detail, "data": self.data})

    @classmethod
    def from_json(cls, payload: bytes) -> CommandResult:
        what = "command result"
        d = load_object(payload, what)
        ok = d.get("ok")
        data = d.get("data", {})
        if not isinstance(ok, bool) or not isinstance(data, dict):
            raise MessageError(f"malformed {what}: ok must be a boolean and data an object")
        return cls(_ident(d, "command_id", what), _text(d, "name", what, max_len=32),
                   ok, _text(d, "detail", what, max_len=1000), data)


@dataclass(frozen=True)
class TimeSample:
    """The terminal's clock when it asked (``device_ms``) and HQ's when it answered."""

    device_ms: int
    hq_ms: int = 0

    def to_json(self) -> bytes:
        return _dump(self.__dict__)

    @classmethod
    def from_json(cls, payload: bytes) -> TimeSample:
        d = load_object(payload, "time sample")
        return cls(int_field(d, "device_ms", "time sample"), _int_or(d, "hq_ms", "time sample"))
