"""Profile ingestion (published and synthetic kernel measurements) and the feature builder."""
