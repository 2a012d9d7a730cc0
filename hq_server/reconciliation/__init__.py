"""Reconciliation: every card's own story (its records) against HQ's ledger."""
