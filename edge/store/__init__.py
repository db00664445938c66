"""Storage: the SQLite layout and migration, the single writer, durable sync, read queries, retention."""
