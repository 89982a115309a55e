"""raw_mbp10: DBN files -> one Delta partition per trade date, and its data-quality checks."""
