"""The ``arithmetic`` dataset: addition and subtraction in a base, generated locally (the SequenceMatch task)."""
