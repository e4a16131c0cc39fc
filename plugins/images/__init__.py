"""Image datasets as grids of discrete pixels: ``digits`` (scikit-learn's 8x8 digits) and ``binarized_mnist``."""
