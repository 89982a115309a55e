"""Command lines: ./phoenix demo, paper and monitor (nothing imports them)."""
