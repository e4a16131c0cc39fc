"""Sample metrics for text: ``distinct_ngrams`` (distinct-n diversity) and ``ngram_divergence`` (n-gram
statistics against held-out text)."""
