"""alerts: Detection -> Alert (lifecycle, dedup, grouping, inhibition, silences)."""
