"""Custom fields (自定义字段) that operators define, and the rules their values follow.

A chain wants fields HQ did not foresee (shoe size, favourite therapist, locker number).
An operator with chain-wide permission defines one (type, longest value, default,
required, choices); every member write checks the values against the definitions; the
values live in the member's ``custom_json`` column, so a new field never needs a schema
migration. Pure: no database here.

Values are stored as JSON in one canonical form per type: text and choice as strings,
integers as integers, decimals as exact decimal *strings* (``"12.50"``; a float would
lose cents), dates as ``YYYY-MM-DD``, yes/no as booleans.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from hq_server.members.errors import FieldDefinitionInvalid, FieldError

FIELD_TYPES = ("text", "integer", "decimal", "date", "choice", "yes_no")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_TEXT = 2000
MAX_CHOICES = 100
INTEGER_RANGE = (-(2**53), 2**53)
_YES = {"yes", "true", "1", "y", "是"}
_NO = {"no", "false", "0", "n", "否"}


@dataclass(frozen=True)
class FieldDefinition:
    """What an operator defined: ``key`` (stored name), ``label`` (shown), ``type`` (one
    of :data:`FIELD_TYPES`), ``max_length`` (text and decimal, in characters),
    ``choices`` (choice), ``default`` (canonical value or None) and ``required``."""

    key: str
    label: str
    type: str
    max_length: int = 200
    choices: tuple[str, ...] = field(default_factory=tuple)
    default: Any = None
    required: bool = False


def check_definition(d: FieldDefinition) -> FieldDefinition:
    """``d`` with its default in canonical form, or :class:`FieldDefinitionInvalid`."""
    problems: list[str] = []
    if not _KEY.fullmatch(d.key or ""):
        problems.append("key: 1 to 40 lower-case letters, digits or '_', starting with a letter")
    label = (d.label or "").strip()
    if not label or len(label) > 100 or any(unicodedata.category(c) == "Cc" for c in label):
        problems.append("label: 1 to 100 characters, no control characters")
    if d.type not in FIELD_TYPES:
        problems.append(f"type: one of {', '.join(FIELD_TYPES)}")
    if not isinstance(d.max_length, int) or isinstance(d.max_length, bool) or not (
            1 <= d.max_length <= MAX_TEXT):
        problems.append(f"max_length: a whole number from 1 to {MAX_TEXT}")
    choices = tuple(d.choices or ())
    if d.type == "choice":
        if not choices or len(choices) > MAX_CHOICES or len(set(choices)) != len(choices) or any(
                not isinstance(c, str) or not c.strip() or len(c) > 100 for c in choices):
            problems.append(f"choices: 1 to {MAX_CHOICES} different non-empty texts of at "
                            "most 100 characters")
    elif choices:
        problems.append("choices: only a choice field has choices")
    if problems:
        raise FieldDefinitionInvalid("; ".join(problems))
    cleaned = FieldDefinition(d.key, label, d.type, d.max_length, choices, None, d.required)
    default = None
    if d.default is not None and d.default != "":
        default, problem = clean_custom_value(cleaned, d.default)
        if problem:
            raise FieldDefinitionInvalid(f"default: {problem}")
    return FieldDefinition(d.key, label, d.type, d.max_length, choices, default, d.required)


def clean_custom_value(d: FieldDefinition, raw: Any) -> tuple[Any, str | None]:
    """The canonical value of ``raw`` for field ``d``, or (None, reason)."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None, ("required" if d.required else None)
    if d.type == "yes_no":
        if isinstance(raw, bool):
            return raw, None
        if isinstance(raw, str) and raw.strip().casefold() in _YES | _NO:
            return raw.strip().casefold() in _YES, None
        return None, "yes or no (true/false, 是/否)"
    if isinstance(raw, float):
        return None, "send numbers with a fraction as text, e.g. \"12.50\" (floats lose cents)"
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None, "must be text or a whole number"
    text = unicodedata.normalize("NFC", str(raw)).strip()
    if len(text) > d.max_length:
        return None, f"at most {d.max_length} characters (this has {len(text)})"
    if d.type == "text":
        if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in text):
            return None, "contains control characters"
        return text, None
    if d.type == "integer":
        if not re.fullmatch(r"[+-]?[0-9]{1,16}", text):
            return None, "a whole number, e.g. 42"
        number = int(text)
        if not INTEGER_RANGE[0] <= number <= INTEGER_RANGE[1]:
            return None, "too large"
        return number, None
    if d.type == "decimal":
        if not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)", text):
            return None, "a decimal number written with digits and one '.', e.g. 12.50"
        try:
            value = Decimal(text)
        except InvalidOperation:
            return None, "a decimal number, e.g. 12.50"
        return format(value, "f"), None
    if d.type == "date":
        try:
            return date.fromisoformat(text).isoformat(), None
        except ValueError:
            return None, "a date written YYYY-MM-DD"
    if d.type == "choice":
        return (text, None) if text in d.choices else (
            None, f"one of: {', '.join(d.choices[:10])}" + (" ..." if len(d.choices) > 10 else ""))
    return None, "unknown field type"


def clean_custom(values: dict[str, Any], definitions: dict[str, FieldDefinition],
                 current: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[FieldError]]:
    """The custom values to store after a write of ``values`` on top of ``current``.

    A new member (``current`` None) gets each definition's default for what it does not
    give; every required field must end up with a value. Unknown keys are refused.
    """
    errors: list[FieldError] = []
    if not isinstance(values, dict):
        return dict(current or {}), [FieldError("custom", "must be an object of field: value")]
    out = dict(current or {})
    for key, raw in values.items():
        d = definitions.get(key)
        if d is None:
            errors.append(FieldError(f"custom.{str(key)[:40]}", "no such custom field"))
            continue
        value, problem = clean_custom_value(d, raw)
        if problem and problem != "required":
            errors.append(FieldError(f"custom.{key}", problem))
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    for key, d in definitions.items():
        if current is None and key not in values and d.default is not None:
            out[key] = d.default
        if d.required and out.get(key) is None and not any(
                e.field == f"custom.{key}" for e in errors):
            errors.append(FieldError(f"custom.{key}", "required"))
    return out, errors
