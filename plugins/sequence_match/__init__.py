"""SequenceMatch (Cundy & Ermon 2024): imitation learning of sequences with a backspace action."""
