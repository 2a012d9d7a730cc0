"""The catalogue (products, prices, bonus tiers) in force over time."""
