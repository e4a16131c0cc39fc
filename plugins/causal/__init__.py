"""The causal (left-to-right) family: the capability contract of causal networks and sampling from them."""
