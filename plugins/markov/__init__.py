"""The ``markov`` dataset: sequences from a seeded random order-k Markov chain whose entropy is known exactly."""
