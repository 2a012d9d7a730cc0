"""Reports: the read-only figures operators look at (ingest, anomalies, fleet)."""
