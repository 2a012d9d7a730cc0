"""What every tier must agree on: money, records, topics, card layout, tariffs.

This package imports nothing of ours, so terminals, HQ and simulators can all depend
on it without depending on each other.
"""
