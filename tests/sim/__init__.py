"""The deterministic simulator: the real terminal and HQ code under one seeded scheduler
(docs/testing.md). ``python -m tests.sim --seed N`` replays one seed."""
