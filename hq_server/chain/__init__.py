"""The chain: regions (大区) and stores (单店), HQ data every scope check stands on."""
