"""MLE: left-to-right autoregressive training with teacher forcing."""
