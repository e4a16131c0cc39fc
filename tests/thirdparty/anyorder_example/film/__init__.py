"""The ``film_mlp`` network: per-token logits from a token embedding modulated by a conditioning vector."""
