"""Sample metrics for text: ``distinct_ngrams`` (distinct-n diversity) and ``ngram_divergence`` (the
Jensen-Shannon divergence of n-gram statistics from held-out text)."""
