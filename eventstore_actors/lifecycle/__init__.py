"""The data lifecycle of a store: personal data encrypted per subject and forgotten by
destroying its key (`encryption`, `forgetting`), retention and truncation of streams
(`retention`), and the supervised actor that deletes what they hide (`scavenger`)."""
