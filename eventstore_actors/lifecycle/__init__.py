"""The data lifecycle of a store: retention and truncation of streams (`retention`), and the
supervised actor that deletes what they hide (`scavenger`)."""
