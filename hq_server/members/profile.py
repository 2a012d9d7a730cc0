"""The member profile (会员资料): its fields, and the rules every write is checked against.

Pure: :func:`clean_profile` takes what an operator typed (API body, CLI options, an
import row) and returns the values to store, or every field that is wrong and why, so a
person can fix them all at once. Text is stored verbatim (an ``<script>`` or a
``'; DROP TABLE`` in a remark is just text: queries bind it, outputs escape it); only
control characters are refused, since no one types them and they break exports.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any

from hq_server.members.errors import FieldError
from hq_server.members.normalise import (
    NotAMobile,
    fold_name,
    name_initials,
    name_pinyin,
    normalise_id_number,
    normalise_mobile,
    resident_id_problem,
)


@dataclass(frozen=True)
class ProfileField:
    """One field of the profile: its kind (``text``, ``multiline``, ``date``,
    ``past_date``, ``gender``, ``email``, ``phone``, ``postcode``, ``mobile``,
    ``id_number``, ``member_ref``, ``store_ref``), longest value, and its Chinese label."""

    name: str
    kind: str
    max_length: int
    label_zh: str
    required: bool = False


PROFILE_FIELDS: tuple[ProfileField, ...] = (
    ProfileField("category", "text", 32, "会员类别"),
    ProfileField("name", "text", 100, "姓名", required=True),
    ProfileField("name_on_card", "text", 50, "卡面姓名"),
    ProfileField("gender", "gender", 8, "性别"),
    ProfileField("nationality", "text", 64, "国籍"),
    ProfileField("birthday", "past_date", 10, "生日"),
    ProfileField("id_number", "id_number", 32, "证件号码"),
    ProfileField("mobile", "mobile", 32, "手机"),
    ProfileField("home_phone", "phone", 32, "住宅电话"),
    ProfileField("home_address", "text", 300, "住宅地址"),
    ProfileField("home_postcode", "postcode", 16, "住宅邮编"),
    ProfileField("billing_address", "text", 300, "账单地址"),
    ProfileField("billing_postcode", "postcode", 16, "账单邮编"),
    ProfileField("email", "email", 254, "电子邮件"),
    ProfileField("company", "text", 200, "公司"),
    ProfileField("title", "text", 100, "职务"),
    ProfileField("company_phone", "phone", 32, "公司电话"),
    ProfileField("company_address", "text", 300, "公司地址"),
    ProfileField("join_date", "past_date", 10, "入会日期"),
    ProfileField("referrer_id", "member_ref", 32, "推荐人"),
    ProfileField("vip_name", "text", 100, "最重要的人"),
    ProfileField("vip_birthday", "past_date", 10, "最重要的人生日"),
    ProfileField("vip_address", "text", 300, "最重要的人地址"),
    ProfileField("wedding_anniversary", "past_date", 10, "结婚纪念日"),
    ProfileField("habits", "multiline", 2000, "消费习性"),
    ProfileField("remark1", "multiline", 1000, "备注一"),
    ProfileField("remark2", "multiline", 1000, "备注二"),
    ProfileField("remark3", "multiline", 1000, "备注三"),
    ProfileField("store_id", "store_ref", 64, "登记门店"),
)
FIELDS_BY_NAME = {f.name: f for f in PROFILE_FIELDS}

_GENDERS = {"male": "male", "m": "male", "男": "male", "female": "female", "f": "female",
            "女": "female", "other": "other", "其他": "other"}
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_PHONE = re.compile(r"\+?[0-9][0-9 \-().]{2,30}(\s*(ext\.?|x|转)\s*[0-9]{1,6})?", re.I)
_POSTCODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z \-]{1,15}")
_MEMBER_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_\-]{0,31}")
EARLIEST_DATE = date(1900, 1, 1)


def member_id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a member number (会员编号), or None."""
    if not _MEMBER_ID.fullmatch(text or ""):
        return ("a member number is 1 to 32 letters, digits, '-' or '_', starting with a "
                "letter or digit")
    return None


def _control_characters(text: str, multiline: bool) -> bool:
    allowed = {"\n", "\t"} if multiline else set()
    return any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in text)


def _date(text: str, field: str, today: date, past: bool) -> tuple[str | None, str | None]:
    try:
        value = date.fromisoformat(text.strip())
    except ValueError:
        return None, "not a date; write it as YYYY-MM-DD, e.g. 1990-05-17"
    if value < EARLIEST_DATE:
        return None, "before 1900-01-01; check the year"
    if past and value > today:
        return None, f"{value.isoformat()} is in the future (today is {today.isoformat()})"
    return value.isoformat(), None


def clean_value(spec: ProfileField, raw: Any, today: date) -> tuple[Any, str | None]:
    """The value to store for ``spec`` from what was typed, or (None, reason)."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if spec.required:
            return None, "required"
        return None, None
    if not isinstance(raw, str):
        return None, "must be text"
    text = unicodedata.normalize("NFC", raw).strip()
    if len(text) > spec.max_length:
        return None, f"at most {spec.max_length} characters (this has {len(text)})"
    if _control_characters(text, spec.kind == "multiline"):
        return None, "contains control characters"
    kind = spec.kind
    if kind == "gender":
        gender = _GENDERS.get(text.casefold())
        return (gender, None) if gender else (None, "one of male, female, other (男/女/其他)")
    if kind == "past_date":
        return _date(text, spec.name, today, past=True)
    if kind == "date":
        return _date(text, spec.name, today, past=False)
    if kind == "mobile":
        try:
            return normalise_mobile(text).e164, None
        except NotAMobile as why:
            return None, str(why)
    if kind == "email":
        return (text, None) if _EMAIL.fullmatch(text) else (
            None, "not an e-mail address (name@example.com)")
    if kind == "phone":
        return (text, None) if _PHONE.fullmatch(text) else (
            None, "not a phone number: digits, spaces, '-', '+', brackets, an extension")
    if kind == "postcode":
        return (text, None) if _POSTCODE.fullmatch(text) else (
            None, "not a postcode: 2 to 16 letters, digits, spaces or '-'")
    if kind == "id_number":
        number = normalise_id_number(text)
        if not re.fullmatch(r"[0-9A-Z\-]{4,32}", number):
            return None, "an ID number is 4 to 32 letters, digits or '-'"
        problem = resident_id_problem(number)
        return (None, problem) if problem else (number, None)
    if kind == "member_ref":
        problem = member_id_problem(text)
        return (None, problem) if problem else (text, None)
    return text, None


def clean_profile(data: dict[str, Any], today: date, *,
                  partial: bool = False) -> tuple[dict[str, Any], list[FieldError]]:
    """The profile values to store from ``data``, and every field that is wrong.

    ``partial`` (an edit): only the fields given are checked and returned; otherwise
    missing fields are empty and required ones are reported. Unknown field names are
    refused, so a typo never silently drops a value.
    """
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    for key in data:
        if key not in FIELDS_BY_NAME:
            errors.append(FieldError(str(key)[:64], "no such profile field"))
    for spec in PROFILE_FIELDS:
        if partial and spec.name not in data:
            continue
        value, problem = clean_value(spec, data.get(spec.name), today)
        if problem:
            errors.append(FieldError(spec.name, problem))
        else:
            out[spec.name] = value
    return out, errors


def search_columns(profile: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns search uses, derived from a whole stored profile."""
    name = profile.get("name") or ""
    mobile = profile.get("mobile")
    birthday = profile.get("birthday")
    id_number = profile.get("id_number")
    return {
        "name_norm": fold_name(name)[:100],
        "name_pinyin": name_pinyin(name),
        "name_initials": name_initials(name),
        "mobile_search": normalise_mobile(mobile).search if mobile else None,
        "birth_month": int(birthday[5:7]) if birthday else None,
        "id_number_norm": normalise_id_number(id_number) if id_number else None,
    }
