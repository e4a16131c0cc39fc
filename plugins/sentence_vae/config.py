"""Options of the ``sentence_vae`` objective (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anyorder.config import PluginConfig, opt, plugin_field
from anyorder.errors import ConfigError

BETA_SCHEDULES = ("constant", "linear", "logistic", "cyclical")
FREE_BITS = ("batch", "example", "dimension")


@dataclass
class SentenceVAEConfig(PluginConfig):
    """Sentence-VAE (Bowman et al. 2016): an encoder q(z|x), a decoder p(x|z) and a prior p(z), trained on the ELBO.

    The loss per sentence is -log p(x|z) + beta KL(q(z|x) || p(z)) with one reparameterised z ~ q(z|x). The
    posterior family and its prior are a `latent` plugin (a plugin kind this family declares): gaussian, vmf, or
    yours. The encoder is the ``encoder`` network section (a network with a pooled output); the decoder is the run's
    ``network``, a causal network conditioned on z (as a vector: the LSTM's initial state, or added to a
    transformer's embeddings; or as a prefix). Validation and evaluation always report the bound at beta = 1.
    """

    implementation = "anyorder_plugins.sentence_vae.objective:SentenceVAE"

    latent: Any = plugin_field("latent", "the posterior family and its prior (an anyorder.latents plugin): gaussian | "
                                         "vmf | yours", default={"name": "gaussian"})
    latent_dim: int = opt(32, "dimensions of z")
    encoder: Any = plugin_field("network", "the encoder: a network with a pooled output (e.g. lstm_encoder)",
                                default={"name": "lstm_encoder"})
    conditioning: str = opt("vector", "how the decoder sees z: vector (an LSTM's initial state, or added to a "
                                      "transformer's embeddings) | prefix (z as the first input embedding)",
                            choices=("vector", "prefix"))
    beta_schedule: str = opt("constant", "the KL weight over training: constant | linear (from beta_start to "
                                         "beta_max over warmup_steps) | logistic (Bowman: beta_max / (1 + exp(-k "
                                         "(step - x0)))) | cyclical (Fu et al. 2019: linear rises that restart)",
                             choices=BETA_SCHEDULES)
    beta_max: float = opt(1.0, "the final (or constant) KL weight")
    beta_start: float = opt(0.0, "the KL weight at the start of a linear or cyclical rise")
    warmup_steps: int = opt(0, "linear: optimizer steps from beta_start to beta_max")
    logistic_k: float = opt(0.0025, "logistic: steepness k")
    logistic_x0: float = opt(2500.0, "logistic: the step x0 where beta reaches beta_max / 2")
    cycles: int = opt(4, "cyclical: number of cycles over train.max_steps")
    cycle_rise: float = opt(0.5, "cyclical: fraction of each cycle spent rising from beta_start to beta_max")
    word_dropout: float = opt(0.0, "rate at which decoder input words are replaced by <unk> during training (Bowman's "
                                   "word dropout; a symbol of its own for data without <unk>; distinct from the "
                                   "network's embedding dropout)")
    free_bits: float = opt(0.0, "free bits lambda in nats (0 disables): KL below it costs nothing")
    free_bits_mode: str = opt("dimension", "batch (Kingma et al.: max(lambda/m, batch-mean KL_j) per dimension) | "
                                           "example (He et al.: max(lambda, KL) per sentence) | dimension "
                                           "(max(lambda/m, KL_j) per sentence and dimension)", choices=FREE_BITS)
    bn_gamma: float = opt(0.0, "batch-normalise the posterior mean with a fixed scale gamma (Zhu et al. 2020's "
                                "BN-VAE; gaussian latents); 0 disables")
    eval_iw_samples: int = opt(0, "importance samples K of the importance-weighted NLL reported at evaluation "
                                  "(0 disables; the literature's protocol is 500)")
    eval_iw_chunk: int = opt(50, "importance samples per decoder pass (memory: batch x chunk sentences at once)")
    active_threshold: float = opt(0.01, "a dimension is active when Var_x E_q[z_j|x] reaches this")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent_dim < 1:
            raise ConfigError(f"sentence_vae: latent_dim must be positive (got {self.latent_dim})")
        if not self.encoder:
            raise ConfigError("sentence_vae: encoder must name a network plugin (e.g. {name: lstm_encoder})")
        for name in ("beta_max", "beta_start", "free_bits", "bn_gamma", "logistic_k"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sentence_vae: {name} must be >= 0 (got {getattr(self, name)})")
        if not 0.0 <= self.word_dropout <= 1.0:
            raise ConfigError(f"sentence_vae: word_dropout must be in [0, 1] (got {self.word_dropout})")
        if self.beta_schedule == "linear" and self.warmup_steps < 1:
            raise ConfigError("sentence_vae: beta_schedule=linear needs warmup_steps >= 1")
        if self.cycles < 1 or not 0.0 < self.cycle_rise <= 1.0:
            raise ConfigError("sentence_vae: cycles must be >= 1 and cycle_rise in (0, 1]")
        for name in ("eval_iw_samples", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sentence_vae: {name} must be >= 0 (got {getattr(self, name)})")
        if self.eval_iw_chunk < 1:
            raise ConfigError(f"sentence_vae: eval_iw_chunk must be positive (got {self.eval_iw_chunk})")
