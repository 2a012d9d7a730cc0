"""Devices: the registry, enrolment, presence, UID credentials and the denylist."""
