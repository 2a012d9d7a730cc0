"""The tests: helpers (card worlds, fleets, reader paths) are imported as ``tests.xxx``."""
