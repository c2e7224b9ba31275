"""Data lifecycle: personal data encrypted per subject, and forgetting it (crypto-shredding)."""
