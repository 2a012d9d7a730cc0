"""Settlement between stores: who owes whom for value sold in one store, spent in another."""
