"""The audit log of operator actions (操作日志): append-only, hash-chained."""
