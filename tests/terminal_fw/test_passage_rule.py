"""The rule for a passage not taken, and where a gate's door comes from (pure, fast)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.terminal_config import ConfigError, parse_config
from terminal_fw.passage import NOT_TAKEN_RULES, Passage, entry_spent
from terminal_fw.runtime.settings import RuntimeSettings
from tests.runtime_world import config_doc


def test_a_completed_passage_always_uses_the_entry() -> None:
    assert entry_spent(Passage.COMPLETED, "keep") is True
    assert entry_spent(Passage.COMPLETED, "spent") is True


def test_turning_back_keeps_the_entry_only_when_the_tariff_says_so() -> None:
    assert entry_spent(Passage.NOT_TAKEN, "keep") is False
    assert entry_spent(Passage.NOT_TAKEN, "spent") is True
    assert entry_spent(Passage.INTERRUPTED, "keep") is False
    assert entry_spent(Passage.INTERRUPTED, "spent") is True


@given(st.sampled_from(NOT_TAKEN_RULES))
def test_a_door_that_never_opened_never_uses_the_entry_and_unknown_waits(rule: str) -> None:
    assert entry_spent(Passage.NOT_OPENED, rule) is False
    assert entry_spent(Passage.UNKNOWN, rule) is None


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError):
        entry_spent(Passage.NOT_TAKEN, "refund")


def test_hq_sets_the_rule_per_gate_and_the_default_is_spent() -> None:
    assert parse_config(config_doc(1)).gate.not_taken == "spent"
    doc = config_doc(1, gate={"group": 1, "accepts": ["swim"], "not_taken": "keep"})
    assert parse_config(doc).gate.not_taken == "keep"
    with pytest.raises(ConfigError):
        parse_config(config_doc(1, gate={"not_taken": "refund"}))


def test_the_local_settings_choose_the_door(tmp_path) -> None:
    path = tmp_path / "terminal.toml"
    path.write_text('[ioboard]\nport = "/dev/ttyAMA0"\n')
    settings = RuntimeSettings.from_toml(path)
    assert (settings.gate_io, settings.ioboard) == ("ioboard", {"port": "/dev/ttyAMA0"})
    path.write_text("[gpio]\nrelay = 5\n")
    assert RuntimeSettings.from_toml(path).gate_io == "gpio"
    path.write_text('[terminal]\ngate_io = "ioboard"\n')
    with pytest.raises(ValueError, match="port"):
        RuntimeSettings.from_toml(path)
    path.write_text('[terminal]\ngate_io = "relay"\n')
    with pytest.raises(ValueError, match="gate_io"):
        RuntimeSettings.from_toml(path)
