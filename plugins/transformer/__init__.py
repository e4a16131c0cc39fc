"""Transformer building blocks shared by the transformer network plugins: layers and their common options."""
