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
from typing import Any


class MessageError(ValueError):
    """A JSON message that does not follow its schema.

    A :class:`ValueError`, so callers that already treat bad input as ``ValueError``
    keep working; catch ``MessageError`` to tell a bad message from other errors.
    """


def load_object(payload: bytes, what: str) -> dict[str, Any]:
    """The JSON object in ``payload``; ``what`` names the message in the error.

    Anything else (bytes that are not JSON, or JSON that is a list, number, ...) is a
    :class:`MessageError`, because every message's fields are read by name.
    """
    try:
        data = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise MessageError(f"malformed {what}: {exc}") from None
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
