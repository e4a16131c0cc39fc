"""The ``keyed`` synthetic source: one key variable determines every other variable of a datapoint."""
