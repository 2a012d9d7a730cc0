"""Tests of terminal_fw: the tap path, the runtime and its roles, card sessions."""
