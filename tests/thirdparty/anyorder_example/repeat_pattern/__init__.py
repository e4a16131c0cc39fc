"""``repeat_pattern``: sequences that repeat a seeded random pattern, with uniform noise."""
