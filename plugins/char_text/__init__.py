"""The ``char_text`` dataset: character-level modelling of a text file (tiny-shakespeare by default)."""
