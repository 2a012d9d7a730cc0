"""Strict parsing of the JSON payloads that travel over MQTT beside records.

Every JSON message a terminal or HQ receives (presence, denylist, config reports, UID
authorisation, commands, clock samples) comes from the network, so nothing in it is
trusted: a payload must be one JSON object, and each field is read with its type and
bounds checked. Every failure raises :class:`MessageError` whose text starts with
``malformed <what>:`` and names the field, so a receiver can log or answer *why* a
message was refused and drop it without crashing.

The message classes themselves live in :mod:`protocol.topics` and :mod:`protocol.fleet`;
this module only holds the field readers they share, so both parse the same way.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


class MessageError(ValueError):
    """A JSON message that does not follow its schema.

    A :class:`ValueError`, so callers that already treat bad input as ``ValueError``
    keep working; catch ``MessageError`` to tell a bad message from other errors.
    """


#: The largest JSON message any topic carries: below the broker's 64 KiB packet limit.
#: Config documents (the largest message) have their own, lower, limit.
MAX_PAYLOAD_BYTES = 60_000

#: No message of ours nests deeper than a handful of levels (a config document's
#: catalogue is the deepest, at about six). CPython's decoder recurses once per level and
#: raises RecursionError near a thousand, so the bound is checked on the bytes first.
MAX_DEPTH = 32

#: A string (to its closing quote, or to the end when unterminated, so a run of lone
#: quotes cannot make the scan quadratic) or one bracket.
_BRACKETS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\Z)|[\[\]{}]', re.DOTALL)


def nesting_depth(payload: bytes) -> int:
    """How deep ``payload``'s arrays and objects nest, counted on the bytes.

    Brackets inside strings are skipped (the regular expression reads a whole string,
    escapes included, as one token), so ``"[[["`` is text, not nesting. Malformed input
    (unbalanced brackets) is not judged here: the decoder refuses it afterwards.
    """
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be too deep: skip the scan for ordinary messages
    depth = deepest = 0
    for token in _BRACKETS.findall(payload):
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def load_json(payload: bytes, what: str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """Decode ``payload`` as JSON, bounded and total: any failure is a MessageError.

    Checked before the decoder runs: the size (``max_bytes``) and the nesting
    (:data:`MAX_DEPTH`), because the decoder recurses once per level and a few thousand
    levels raise RecursionError out of whatever thread decodes. Then the bytes must be
    UTF-8 (RFC 8259), and ``NaN``, ``Infinity`` and numbers that overflow to them are
    refused. Whatever else the decoder
    raises (a number beyond Python's int-string limit, MemoryError on a huge one, ...)
    becomes a MessageError too: a message from the network never raises anything else.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise MessageError(f"malformed {what}: payload is not bytes")
    payload = bytes(payload)
    if len(payload) > max_bytes:
        raise MessageError(f"malformed {what}: over {max_bytes} bytes ({len(payload)})")
    if nesting_depth(payload) > MAX_DEPTH:
        raise MessageError(f"malformed {what}: nested deeper than {MAX_DEPTH} levels")
    try:
        text = payload.decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise MessageError(f"malformed {what}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise MessageError(f"malformed {what}: not JSON ({exc})") from None
    except (RecursionError, MemoryError, OverflowError, TypeError) as exc:
        raise MessageError(f"malformed {what}: cannot be decoded ({type(exc).__name__})") from None


def load_object(payload: bytes, what: str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """The JSON object in ``payload``; ``what`` names the message in the error.

    Every JSON topic of ours is read through here (see :func:`load_json` for the
    bounds). Anything but an object (a list, number, ...) is a :class:`MessageError`,
    because every message's fields are read by name.
    """
    data = load_json(payload, what, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise MessageError(f"malformed {what}: not a JSON object")
    return data


def int_field(data: dict[str, Any], key: str, what: str, *, minimum: int | None = 0,
              optional: bool = False) -> int | None:
    """The integer ``data[key]``, at least ``minimum`` (no lower bound when None).

    ``true``/``false`` are refused although Python counts them as ints, since a sender
    that puts a boolean where a sequence or time belongs is not following the schema.
    A missing (or null) field is an error unless ``optional``, in which case it is None.
    """
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (
            minimum is not None and value < minimum):
        raise MessageError(f"malformed {what}: {key} must be an integer"
                           + (f" >= {minimum}" if minimum is not None else ""))
    return value


def str_field(data: dict[str, Any], key: str, what: str, *, max_len: int = 64) -> str:
    """The text ``data[key]`` of at most ``max_len`` characters; "" when it is missing.

    The length bound keeps one message from filling HQ's registry or a terminal's disk.
    Callers for which an empty value is wrong check that themselves.
    """
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > max_len:
        raise MessageError(f"malformed {what}: {key} must be text of at most {max_len} characters")
    return value
