"""Everything that speaks SQL. Knows nothing of actors."""
