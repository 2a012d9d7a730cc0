"""The ``onecard`` command and the demo: the composition root.

This package wires the tiers together (it may import any of them); nothing imports it.
Each subcommand is a thin layer over functions the tests call too.
"""
