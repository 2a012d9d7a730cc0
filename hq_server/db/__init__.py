"""HQ's database: the tables, opening (and migrating) an engine, bulk writes."""
