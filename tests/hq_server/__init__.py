"""Tests of hq_server/, one file per domain rule or path."""
