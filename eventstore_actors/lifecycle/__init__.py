"""Data lifecycle: what happens to events as they age (archiving to Parquet)."""
