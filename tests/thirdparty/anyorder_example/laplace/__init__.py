"""The ``laplace`` latent family: a factorised Laplace posterior with a Laplace(0, 1) prior, for sentence_vae."""
