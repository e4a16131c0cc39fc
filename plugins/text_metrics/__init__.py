"""Sample metrics for text: the ``distinct_ngrams`` diversity metric (distinct-n)."""
