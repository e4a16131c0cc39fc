"""Example third-party anyorder plugins: the ``bag_of_tokens`` objective and the ``repeat_pattern`` dataset."""
