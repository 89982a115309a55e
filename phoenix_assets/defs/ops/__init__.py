"""Operations: what starts runs without a person (sensors, schedules), run health, and Dagster's private API."""
