"""The Sentence-VAE family: a text VAE (Bowman et al. 2016) whose posterior families are plugins of the `latent` kind."""
