"""The deployment guides' examples run: the example config is valid and open every day,
the credential examples fit its prices, and both guides name the same CA, token lifetime
and join command as the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from onecard.cli import main
from protocol.terminal_config import DAYS, parse_config

DOCS = Path(__file__).parent.parent / "docs"
TERMINAL = (DOCS / "deploy-terminal.md").read_text()
BROKER = (DOCS / "deploy-broker.md").read_text()


def example_config() -> dict:
    block = re.search(r"```json\n(\{\"version\".*?)```", TERMINAL, re.S)
    assert block, "deploy-terminal.md lost its example config"
    return json.loads(block.group(1))


def test_the_example_config_parses_and_opens_the_gate_every_day():
    doc = example_config()
    config = parse_config(doc)
    assert set(doc["opening_hours"]) == set(DAYS)
    assert config.version == doc["version"]


def test_every_credential_example_is_worth_a_visit_under_the_example_config():
    visit = example_config()["uid"]["visit_amount_fen"]
    adds = re.findall(r"uid-credential add (?:\\\n|[^\n\\])*", TERMINAL)
    assert adds
    for add in adds:
        limit = re.search(r"--max-amount-fen (\d+)", add)
        assert limit and int(limit.group(1)) >= visit, add


def test_both_guides_agree_on_the_token_lifetime_and_the_ca():
    for text in (TERMINAL, BROKER):
        assert "24 hours by default" in text
        assert "a few hours" not in text
        assert "/etc/onecard/hq-ca.pem" not in text  # nothing produces that file
    assert "site/hq/device-ca.pem" in BROKER


def test_the_join_line_in_the_guides_is_what_the_commands_take():
    for text in (TERMINAL, BROKER):
        assert "onecard terminal join https://" in text and "--ca-hash sha256:" in text
    runner = CliRunner()
    join_help = runner.invoke(main, ["terminal", "join", "--help"]).output
    for option in ("--token", "--ca-hash", "--pcsc-entry", "--uid-reader", "--no-start"):
        assert option in join_help
    token_help = runner.invoke(main, ["hq", "enrolment-token", "--help"]).output
    assert "--site" in token_help and "--hq-url" in token_help
    keys_help = runner.invoke(main, ["hq", "card-keys", "init", "--help"]).output
    assert "--chain-id" in keys_help
    push_help = runner.invoke(main, ["hq", "push-config", "--help"]).output
    assert "--store" in push_help
