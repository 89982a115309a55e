"""Paper-trading stage: the journal's tables -> paper_daily_report -> paper_track_record (go-live gate)."""
