"""Cards at HQ (卡片档案): the registry of every card, kept current from ingested records."""
