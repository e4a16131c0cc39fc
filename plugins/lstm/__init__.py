"""LSTM networks: a pooling sentence encoder (``lstm_encoder``) and a causal decoder (``lstm_decoder``)."""
