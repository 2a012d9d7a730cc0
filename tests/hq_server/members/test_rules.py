"""The pure rules of members: mobile numbers, names in pinyin, profile fields, custom fields."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hq_server.members.custom_fields import (
    FieldDefinition,
    check_definition,
    clean_custom,
    clean_custom_value,
)
from hq_server.members.errors import FieldDefinitionInvalid
from hq_server.members.normalise import (
    NotAMobile,
    name_initials,
    name_pinyin,
    normalise_mobile,
    resident_id_problem,
)
from hq_server.members.profile import clean_profile

TODAY = date(2026, 11, 30)
mainland = st.builds(lambda second, rest: f"1{second}{rest}",
                     st.sampled_from("3456789"), st.text("0123456789", min_size=9, max_size=9))


@given(number=mainland, style=st.sampled_from(["{n}", "+86{n}", "+86 {a} {b} {c}", "0086{n}",
                                               "86{n}", "{a}-{b}-{c}", "({a}) {b}.{c}"]),
       full_width=st.booleans())
def test_a_mainland_mobile_however_typed_is_one_number(number, style, full_width):
    typed = style.format(n=number, a=number[:3], b=number[3:7], c=number[7:])
    if full_width:
        typed = typed.translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})
    m = normalise_mobile(typed)
    assert m.e164 == "+86" + number and m.search == number
    assert normalise_mobile(m.e164) == m  # idempotent: the stored form normalises to itself


@given(digits=st.text("0123456789", min_size=8, max_size=15).filter(
    lambda d: d[0] != "0" and not d.startswith("86")))
def test_an_international_number_is_kept_in_e164(digits):
    assert normalise_mobile("+" + digits).e164 == "+" + digits
    assert normalise_mobile("00" + digits).e164 == "+" + digits


@given(text=st.text(max_size=30))
def test_anything_else_is_refused_with_a_reason_never_crashes(text):
    try:
        m = normalise_mobile(text)
    except NotAMobile as why:
        assert str(why)
        return
    assert m.e164.startswith("+") and m.e164[1:].isdigit() and 8 <= len(m.e164) - 1 <= 15


@pytest.mark.parametrize("typed", ["12345", "10012345678", "23800138000", "+86 12800138000",
                                   "138001380001", "phone", "+0441234567", ""])
def test_not_a_mobile(typed):
    with pytest.raises(NotAMobile):
        normalise_mobile(typed)


def test_names_are_found_by_pinyin_and_initials():
    assert name_initials("张三") == "zs" and name_pinyin("张三") == "zhangsan"
    assert name_initials("John Smith") == "js" and name_pinyin("Ｊohn Smith") == "johnsmith"
    assert name_initials("<b>李四</b>") == "blsb"  # markup is just letters to search


def test_a_resident_id_number_is_checked_only_when_it_looks_like_one():
    assert resident_id_problem("11010519491231002X") is None
    assert "check digit" in resident_id_problem("110105194912310021")
    assert "birth date" in resident_id_problem("110105194913310021")
    assert resident_id_problem("E12345678") is None  # a passport


def test_every_wrong_field_is_reported_with_a_reason():
    cleaned, errors = clean_profile({
        "name": "x" * 101, "birthday": "2031-01-01", "mobile": "12345", "email": "no-at",
        "gender": "maybe", "join_date": "31/12/2020", "shoe": "42", "remark1": "ok\x00"},
        TODAY)
    reasons = {e.field: e.reason for e in errors}
    assert reasons["name"] == "at most 100 characters (this has 101)"
    assert reasons["birthday"] == "2031-01-01 is in the future (today is 2026-11-30)"
    assert "mainland China mobile" in reasons["mobile"]
    assert "e-mail" in reasons["email"] and "male" in reasons["gender"]
    assert "YYYY-MM-DD" in reasons["join_date"] and reasons["shoe"] == "no such profile field"
    assert reasons["remark1"] == "contains control characters"


def test_a_required_name_and_verbatim_text():
    _, errors = clean_profile({"mobile": "13800138000"}, TODAY)
    assert [(e.field, e.reason) for e in errors] == [("name", "required")]
    cleaned, errors = clean_profile({"name": "<b>张三</b>'; --", "gender": "女"}, TODAY)
    assert not errors and cleaned["name"] == "<b>张三</b>'; --" and cleaned["gender"] == "female"


DECIMAL = FieldDefinition("deposit", "Deposit", "decimal", max_length=30)


@given(value=st.decimals(allow_nan=False, allow_infinity=False, places=2,
                         min_value=Decimal("-1e12"), max_value=Decimal("1e12")))
def test_decimals_are_exact_strings(value):
    stored, problem = clean_custom_value(DECIMAL, str(value))
    assert problem is None and isinstance(stored, str) and Decimal(stored) == value
    assert clean_custom_value(DECIMAL, stored) == (stored, None)


@given(value=st.floats(allow_nan=True))
def test_floats_are_refused_for_every_type(value):
    for kind in ("decimal", "integer", "text"):
        _, problem = clean_custom_value(FieldDefinition("f", "F", kind), value)
        assert problem


@given(text=st.text(max_size=60))
def test_custom_text_respects_its_length(text):
    field = FieldDefinition("nick", "Nickname", "text", max_length=20)
    stored, problem = clean_custom_value(field, text)
    if problem is None:
        assert stored is None or (stored == stored.strip() and len(stored) <= 20)
    else:
        assert "at most 20" in problem or "control" in problem or problem == "required"


@given(number=st.integers(min_value=-(2**53), max_value=2**53))
def test_integers_from_text_or_number(number):
    field = FieldDefinition("size", "Size", "integer")
    assert clean_custom_value(field, number) == (number, None)
    assert clean_custom_value(field, str(number)) == (number, None)


def test_choice_yes_no_date_required_and_default():
    therapist = check_definition(FieldDefinition("therapist", "Therapist", "choice",
                                                 choices=("Li", "Wang"), default="Li"))
    vip = FieldDefinition("vip", "VIP", "yes_no", required=True)
    since = FieldDefinition("since", "Since", "date")
    defs = {"therapist": therapist, "vip": vip, "since": since}
    values, errors = clean_custom({"vip": "是", "since": "2020-02-29"}, defs)
    assert not errors and values == {"therapist": "Li", "vip": True, "since": "2020-02-29"}
    values, errors = clean_custom({"therapist": "Zhao", "since": "2021-02-29", "x": 1}, defs)
    assert {e.field for e in errors} == {"custom.therapist", "custom.since", "custom.x",
                                         "custom.vip"}
    with pytest.raises(FieldDefinitionInvalid, match="default"):
        check_definition(FieldDefinition("t", "T", "choice", choices=("a",), default="b"))
    with pytest.raises(FieldDefinitionInvalid, match="key"):
        check_definition(FieldDefinition("Bad Key", "T", "text"))
