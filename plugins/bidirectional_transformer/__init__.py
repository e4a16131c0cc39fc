"""A bidirectional transformer with time conditioning, for any fixed-size discrete data."""
