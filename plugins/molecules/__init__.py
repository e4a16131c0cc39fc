"""Molecules: exact graph and SMILES codecs, molecule datasets and the molecule evaluation metrics (needs RDKit)."""
