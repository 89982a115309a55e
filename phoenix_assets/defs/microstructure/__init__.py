"""Microstructure stage: raw_mbp10 -> book_snapshots_1s -> ofi_bars_1m (daily)."""
