"""The fleet service: HQ's MQTT client for config, denylist, UID answers, commands, clock."""
