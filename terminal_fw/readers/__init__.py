"""Card readers: one small interface (:mod:`terminal_fw.readers.base`), one driver per file."""
