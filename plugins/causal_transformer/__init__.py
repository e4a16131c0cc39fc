"""Causal transformer network plugin: a left-to-right transformer with KV-cache sampling."""
