"""The recycle bin (数据回收站): deleted members, products and operators, restorable until an
administrator purges them after the retention period. See :mod:`hq_server.recycle.bin`."""
