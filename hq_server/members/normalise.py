"""How operators type things, and the one form HQ stores and searches them in.

Pure functions, no database. A mobile number is stored in E.164 (``+8613800138000``) and
beside it the digits an operator types at a counter (``13800138000`` for a mainland
number, the E.164 digits for any other), so a prefix search by phone finds the member
whichever way it was typed. Names are stored as typed and, for search, folded (NFKC,
case-folded, spaces collapsed) and spelled in pinyin, full (``zhangsan``) and by
initials (``zs``): an operator finds 张三 by typing ``zs``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

#: Characters people put inside phone numbers; dropped before checking the digits.
_PHONE_SEPARATORS = re.compile(r"[\s\-().\u00a0/]")
_MAINLAND_MOBILE = re.compile(r"1[3-9][0-9]{9}")


class NotAMobile(ValueError):
    """Text that is neither a mainland China mobile nor an international E.164 number."""


@dataclass(frozen=True)
class Mobile:
    """A normalised mobile number: ``e164`` is stored (unique), ``search`` is what a
    prefix search compares (the national number for +86, the E.164 digits otherwise)."""

    e164: str
    search: str


def normalise_mobile(text: str) -> Mobile:
    """The one stored form of a mobile number, or :class:`NotAMobile` with why.

    Accepted: a mainland China mobile (11 digits, 13–19…), with or without ``+86``,
    ``86`` or ``0086`` in front; or an international number written with ``+`` or
    ``00`` and its country code (E.164: 8 to 15 digits, not starting with 0).
    Full-width digits (１３８…) and spaces, dashes, dots and brackets are accepted.
    """
    folded = unicodedata.normalize("NFKC", text or "").strip()
    if not folded:
        raise NotAMobile("mobile is empty")
    compact = _PHONE_SEPARATORS.sub("", folded)
    international = compact.startswith("+") or compact.startswith("00")
    digits = compact[1:] if compact.startswith("+") else (
        compact[2:] if compact.startswith("00") else compact)
    if not digits.isascii() or not digits.isdigit():
        raise NotAMobile(f"mobile {text[:40]!r} has characters other than digits "
                         "(and a leading +)")
    if not international and len(digits) == 13 and digits.startswith("86"):
        digits, international = digits, True  # 8613800138000: a mainland number with 86
    if not international:
        if _MAINLAND_MOBILE.fullmatch(digits):
            return Mobile("+86" + digits, digits)
        raise NotAMobile(f"mobile {text[:40]!r} is not a mainland China mobile (11 digits "
                         "starting 13–19); write an international one with + and its "
                         "country code")
    if digits.startswith("86"):
        national = digits[2:]
        if _MAINLAND_MOBILE.fullmatch(national):
            return Mobile("+" + digits, national)
        raise NotAMobile(f"mobile {text[:40]!r}: after +86 a mainland mobile has 11 digits "
                         "starting 13–19")
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        raise NotAMobile(f"mobile {text[:40]!r} is not an international number: + and a "
                         "country code, 8 to 15 digits in all (E.164)")
    return Mobile("+" + digits, digits)


def mobile_search_prefix(text: str) -> tuple[str, str] | None:
    """What a phone search compares: (``"e164"`` or ``"search"``, prefix), or None when
    ``text`` has no digits to search by. ``+44 20`` searches E.164; ``138 0013`` the
    digits operators type."""
    folded = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", text or "").strip())
    if folded.startswith("+") and folded[1:].isascii() and folded[1:].isdigit() and folded[1:]:
        return "e164", folded
    if folded.isascii() and folded.isdigit():
        return "search", folded
    return None


def fold_name(text: str) -> str:
    """A name as search compares it: NFKC, case-folded, inner spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_READINGS: dict[str, str] = {}


def _reading(ch: str) -> str:
    """The most common pinyin of one Chinese character (cached: an import of 100,000
    names looks up a few thousand characters, not 100,000 names)."""
    reading = _READINGS.get(ch)
    if reading is None:
        from pypinyin import Style, lazy_pinyin

        reading = _READINGS[ch] = (lazy_pinyin(ch, style=Style.NORMAL) or [""])[0]
    return reading


def _syllables(name: str) -> list[str]:
    """The name as pinyin syllables (Chinese characters) and words (anything else)."""
    out: list[str] = []
    word: list[str] = []
    for ch in fold_name(name) + " ":
        if _HAN.match(ch):
            out.extend(w for w in re.split(r"[^0-9a-z]+", "".join(word)) if w)
            word = []
            if reading := _reading(ch):
                out.append(reading)
        else:
            word.append(ch)
    out.extend(w for w in re.split(r"[^0-9a-z]+", "".join(word)) if w)
    return out


def name_pinyin(name: str) -> str:
    """The full pinyin of a name, letters only: 张三 → ``zhangsan``; John Smith →
    ``johnsmith``. For each character its most common reading."""
    return "".join(_syllables(name))[:200]


def name_initials(name: str) -> str:
    """The initials operators type: 张三 → ``zs``; 曾小贤 → ``cxx``; John Smith → ``js``."""
    return "".join(s[0] for s in _syllables(name))[:100]


def normalise_id_number(text: str) -> str:
    """An ID document number as compared: NFKC, spaces dropped, upper case."""
    return "".join(unicodedata.normalize("NFKC", text or "").split()).upper()


_RESIDENT_ID = re.compile(r"[0-9]{17}[0-9X]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def resident_id_problem(number: str) -> str | None:
    """Why an 18-character mainland resident ID (居民身份证号) is not one, or None.

    Only numbers shaped like one are checked (GB 11643: birth date and check digit);
    passports and other documents pass unchecked."""
    if not _RESIDENT_ID.fullmatch(number):
        return None
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return "the birth date inside this resident ID number is not a date"
    check = _ID_CHECK[sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS,
                                                       strict=True)) % 11]
    if number[17] != check:
        return "the check digit of this resident ID number is wrong (mistyped?)"
    return None


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix`` (in code
    point order), for an index range scan ``prefix <= col < bound``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
