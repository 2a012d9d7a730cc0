"""Ingest: device records from the broker to the ledger, each exactly once, then acked."""
