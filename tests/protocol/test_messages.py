"""protocol.messages: what the shared JSON field readers refuse, and with which reason."""

from __future__ import annotations

import pytest

from protocol import topics
from protocol.messages import MessageError, int_field, load_object, str_field


@pytest.mark.parametrize("payload", [b"{not json", b"", b"\xff\xfe"])
def test_a_payload_that_is_not_json_is_refused(payload):
    with pytest.raises(MessageError, match=r"^malformed birth: "):
        load_object(payload, "birth")


@pytest.mark.parametrize("payload", [b"[1, 2]", b"7", b'"text"', b"null"])
def test_json_that_is_not_an_object_is_refused(payload):
    with pytest.raises(MessageError, match=r"^malformed heartbeat: not a JSON object$"):
        load_object(payload, "heartbeat")


def test_an_object_is_returned_as_parsed():
    assert load_object(b'{"bdseq": 3, "store": "s"}', "birth") == {"bdseq": 3, "store": "s"}


def test_a_missing_int_is_refused_unless_optional():
    with pytest.raises(MessageError, match=r"^malformed death: bdseq must be an integer >= 0$"):
        int_field({}, "bdseq", "death")
    assert int_field({}, "time_ms", "death", optional=True) is None
    assert int_field({"time_ms": None}, "time_ms", "death", optional=True) is None


def test_int_bounds():
    assert int_field({"n": 0}, "n", "x") == 0
    with pytest.raises(MessageError, match="n must be an integer >= 0"):
        int_field({"n": -1}, "n", "x")
    assert int_field({"n": 5}, "n", "x", minimum=5) == 5
    with pytest.raises(MessageError, match="n must be an integer >= 5"):
        int_field({"n": 4}, "n", "x", minimum=5)
    assert int_field({"n": -10**12}, "n", "x", minimum=None) == -10**12


@pytest.mark.parametrize("value", [True, False, 1.0, "1", [1], {}])
def test_an_int_field_takes_only_a_real_integer(value):
    with pytest.raises(MessageError, match=r"^malformed x: n must be an integer$"):
        int_field({"n": value}, "n", "x", minimum=None)


def test_a_bool_is_not_an_int_even_when_optional():
    with pytest.raises(MessageError):
        int_field({"n": True}, "n", "x", optional=True)


def test_str_field_length_and_type():
    assert str_field({}, "store", "birth") == ""
    assert str_field({"store": "s" * 64}, "store", "birth") == "s" * 64
    with pytest.raises(MessageError,
                       match=r"^malformed birth: store must be text of at most 64 characters$"):
        str_field({"store": "s" * 65}, "store", "birth")
    assert str_field({"role": "r" * 16}, "role", "birth", max_len=16) == "r" * 16
    with pytest.raises(MessageError, match="role must be text of at most 16 characters"):
        str_field({"role": "r" * 17}, "role", "birth", max_len=16)
    with pytest.raises(MessageError, match="store must be text"):
        str_field({"store": 5}, "store", "birth")


def test_message_error_is_a_value_error_and_still_importable_from_topics():
    assert issubclass(MessageError, ValueError)
    assert topics.MessageError is MessageError
    with pytest.raises(topics.MessageError):
        topics.Heartbeat.from_json(b'{"bdseq": 1, "time_ms": 2, "outbox_depth": true}')


@pytest.mark.parametrize("device_id", ["", "a/b", "gate+1", "#", "x" * 65, "gate 01"])
def test_a_bad_device_id_makes_no_topic(device_id):
    with pytest.raises(ValueError, match="not a device id"):
        topics.device_topic_root(device_id)
    with pytest.raises(ValueError, match="not a device id"):
        topics.records_topic(device_id)


def test_a_good_device_id_makes_its_subtree():
    assert topics.device_topic_root("gate-01.a_b") == "onecard/v1/dev/gate-01.a_b"
    assert topics.records_topic("gate-01") == "onecard/v1/dev/gate-01/up/records"
    with pytest.raises(ValueError):  # a separator would let an id build another id's names
        topics.device_topic_root("gate-01:c")
