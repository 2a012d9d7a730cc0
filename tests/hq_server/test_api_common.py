"""Cursor pagination, idempotency keys and edit conflicts shared by every API v1 router."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hq_server.api.common import (
    BadCursor,
    EditConflict,
    IdempotencyKeyReused,
    StoredAnswer,
    check_version,
    decode_cursor,
    encode_cursor,
    page_limit,
    run_idempotent,
)
from tests.hq_records import STORES, store_engine


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


@given(key=st.tuples(st.text(max_size=20), st.integers(min_value=-2**53, max_value=2**53)))
def test_a_cursor_gives_back_its_key(key):
    assert decode_cursor(encode_cursor(key), 2) == key


@given(junk=st.text(max_size=600))
def test_a_cursor_not_made_here_is_refused_never_crashes(junk):
    try:
        decoded = decode_cursor(junk, 2)
    except BadCursor:
        return
    assert decoded is None or (len(decoded) == 2 and encode_cursor(decoded))


def test_page_limits_are_clamped():
    assert page_limit(None) == 50 and page_limit(0) == 1 and page_limit(10_000) == 200


def test_an_edit_on_an_old_version_is_refused_with_what_changed():
    current = {"version": 3, "name": "张三丰", "mobile": "13800000000"}
    check_version(3, current)
    with pytest.raises(EditConflict) as refused:
        check_version(2, current, based_on={"version": 2, "name": "张三", "mobile": "13800000000"})
    assert refused.value.changed == ["name"] and refused.value.current == current
    with pytest.raises(EditConflict):
        check_version(None, current)


def test_a_retry_with_the_same_key_runs_once_and_gets_the_first_answer(engine):
    runs = []

    def create() -> StoredAnswer:
        runs.append(1)
        return StoredAnswer(201, {"id": f"M{len(runs)}"})

    first = run_idempotent(engine, "alice", "k-1", "POST", "/v1/members", b'{"n":1}', create, 10)
    again = run_idempotent(engine, "alice", "k-1", "POST", "/v1/members", b'{"n":1}', create, 20)
    assert runs == [1] and first == again == StoredAnswer(201, {"id": "M1"})
    with pytest.raises(IdempotencyKeyReused):
        run_idempotent(engine, "alice", "k-1", "POST", "/v1/members", b'{"n":2}', create, 30)
    # keys are per operator, and no key means no memory
    run_idempotent(engine, "bob", "k-1", "POST", "/v1/members", b'{"n":1}', create, 40)
    run_idempotent(engine, "alice", None, "POST", "/v1/members", b'{"n":1}', create, 50)
    assert len(runs) == 3


def test_a_failed_first_request_can_be_retried_with_its_key(engine):
    def fails() -> StoredAnswer:
        raise ValueError("refused")

    with pytest.raises(ValueError):
        run_idempotent(engine, "alice", "k-2", "POST", "/v1/cards", b"{}", fails, 10)
    answer = run_idempotent(engine, "alice", "k-2", "POST", "/v1/cards", b"{}",
                            lambda: StoredAnswer(201, {"ok": True}), 20)
    assert answer.status == 201
