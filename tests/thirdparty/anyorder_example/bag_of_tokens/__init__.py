"""``bag_of_tokens``: a position-independent (unigram) model of discrete sequences, trained by maximum likelihood."""
