"""LO-ARM (Wang et al. 2025): an any-order autoregressive model with a learned, state-dependent order-policy."""
