"""The ``ptb`` dataset: Mikolov's Penn Treebank language-modelling text, one sentence per datapoint."""
