"""The data lifecycle of a store: personal data encrypted per subject and forgotten by
destroying its key (`encryption`, `forgetting`), retention and truncation of streams
(`retention`), the supervised actor that deletes what they hide (`scavenger`), and archiving
old events to Parquet files that reads still see (`archive`)."""
