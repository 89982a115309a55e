"""Ingest stage: landing folder or Databento API -> raw_mbp10 (daily) with its blocking checks."""
