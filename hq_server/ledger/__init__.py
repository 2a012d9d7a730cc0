"""The double-entry ledger: the chart of accounts, postings, its one writer, its check."""
