"""The causal transformer network: a GPT-style decoder with a preallocated KV cache for fast sampling."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from anyorder.network import Conditioning, NetworkIO
from anyorder_plugins.causal.network import CausalNetwork, KVCache, check_where
from anyorder_plugins.causal_transformer.config import CausalTransformerConfig
from anyorder_plugins.transformer.layers import Rope, RotaryEmbedding, TransformerBlock, init_transformer_weights


class CausalTransformer(CausalNetwork):
    """Left-to-right transformer: embeddings, ``n_layers`` pre-norm causal blocks, final LayerNorm, linear head.

    Reads tokens in ``[0, io.input_vocab_size)`` at positions ``[0, io.max_len)`` and returns logits over
    ``io.output_vocab_size`` values. The token embedding and the head share their weight when
    ``config.tie_embeddings`` is set and both vocabularies have the same size (``self.tied`` says which).

    Conditioned on a vector (``io.conditioning`` vector), a linear map of ``condition`` [B, C] is added to every
    position's embedding. Conditioned on a prefix, a linear map of ``condition`` [B, P, C] occupies positions 0..P-1
    before the tokens (which then sit at positions P.. and so need ``io.max_len`` to count the prefix); the logits
    are those of the tokens only, and explicit ``positions`` and ``attn_mask`` arguments describe the tokens alone.
    """

    Config = CausalTransformerConfig
    conditionings = frozenset({Conditioning.NONE, Conditioning.VECTOR, Conditioning.PREFIX})

    def __init__(self, config: CausalTransformerConfig, io: NetworkIO) -> None:
        super().__init__(config, io)
        d_model, self.max_len = config.d_model, io.max_len
        self.prefix_len = io.condition_len if io.conditioning is Conditioning.PREFIX else 0
        self.cond_proj = nn.Linear(io.condition_dim, d_model) if io.condition_dim else None
        self.tok_emb = nn.Embedding(io.input_vocab_size, d_model)
        self.pos_emb = nn.Embedding(io.max_len, d_model) if config.positions == "learned" else None
        self.rotary = RotaryEmbedding(d_model // config.n_heads, io.max_len) if config.positions == "rotary" else None
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d_model,
                config.n_heads,
                config.ff_width,
                dropout=config.dropout,
                bias=config.bias,
                norm_eps=config.norm_eps,
                causal=True,
            )
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model, eps=config.norm_eps, bias=config.bias)
        self.head = nn.Linear(d_model, io.output_vocab_size, bias=False)
        init_transformer_weights(self, config.n_layers)
        # Tying needs equal shapes; with different vocabularies the option is documented to have no effect.
        self.tied = bool(config.tie_embeddings and io.input_vocab_size == io.output_vocab_size)
        if self.tied:
            self.head.weight = self.tok_emb.weight

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _check_positions(self, positions: Tensor | None, end: int) -> None:
        """Raise a clear ValueError for positions outside ``[0, max_len)`` (``end``: one past the default ones)."""
        if positions is None:
            if end > self.max_len:
                raise ValueError(
                    f"sequence reaches position {end - 1}, but this network was built for positions "
                    f"0..{self.max_len - 1} (io.max_len={self.max_len})"
                )
            return
        if positions.numel() == 0:
            return
        low, high = int(positions.min()), int(positions.max())
        if low < 0 or high >= self.max_len:
            raise ValueError(
                f"positions must be in [0, {self.max_len}) (io.max_len={self.max_len}); got values in [{low}, {high}]"
            )

    def _embed(self, tokens: Tensor, positions: Tensor | None, offset: int) -> tuple[Tensor, Rope | None]:
        """Token (+ learned position) embeddings [B, T, D] and the rotary tables, for default or explicit positions."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        length = tokens.shape[1]
        if positions is not None and positions.shape != tokens.shape:
            raise ValueError(f"positions {tuple(positions.shape)} must have the shape of tokens {tuple(tokens.shape)}")
        self._check_positions(positions, offset + length)
        x = self.tok_emb(tokens)
        if self.pos_emb is not None:
            # Slicing the table for default positions avoids building an index tensor on every step.
            x = x + (self.pos_emb.weight[offset : offset + length] if positions is None else self.pos_emb(positions))
        rope = self.rotary(positions, length=length, offset=offset) if self.rotary is not None else None
        return self.emb_dropout(x), rope

    # -- conditioning ----------------------------------------------------------------------------------------------

    def _check_condition(self, condition: Tensor | None, batch: int) -> None:
        io = self.io
        if io.conditioning is Conditioning.NONE:
            if condition is not None:
                raise ValueError("this network was built without a conditioning input; got a condition")
            return
        want = (batch, io.condition_dim) if io.conditioning is Conditioning.VECTOR else \
            (batch, io.condition_len, io.condition_dim)
        if condition is None or tuple(condition.shape) != want:
            got = None if condition is None else tuple(condition.shape)
            raise ValueError(f"condition must have shape {want} ({io.conditioning.value} conditioning), got {got}")

    def _with_prefix(self, tokens: Tensor, positions: Tensor | None, attn_mask: Tensor | None, condition: Tensor,
                     offset: int) -> tuple[Tensor, Rope | None, Tensor | None]:
        """Embeddings of the prefix (positions 0..P-1) followed by the tokens (P + their positions), the rotary
        tables of all of them, and the attention mask widened so that every position sees the whole prefix."""
        p, (b, t) = self.prefix_len, tokens.shape
        token_pos = (torch.arange(t, device=tokens.device) + offset)[None].expand(b, t) if positions is None \
            else positions
        x_tokens, _ = self._embed(tokens, token_pos + p, 0)
        assert self.cond_proj is not None
        prefix = self.cond_proj(condition)
        if self.pos_emb is not None:
            prefix = prefix + self.pos_emb.weight[:p]
        x = torch.cat([self.emb_dropout(prefix), x_tokens], dim=1)
        all_pos = torch.cat([torch.arange(p, device=tokens.device)[None].expand(b, p), token_pos + p], dim=1)
        rope = self.rotary(all_pos, length=p + t) if self.rotary is not None else None
        if attn_mask is None:
            return x, rope, None
        wide = torch.zeros(b, p + t, p + attn_mask.shape[-1], dtype=torch.bool, device=tokens.device)
        wide[:, :p, :p] = torch.ones(p, p, dtype=torch.bool, device=tokens.device).tril()
        wide[:, p:, :p] = True
        wide[:, p:, p:] = attn_mask
        return x, rope, wide

    # -- the CausalNetwork interface -----------------------------------------------------------------------------

    def forward(self, tokens: Tensor, positions: Tensor | None = None, attn_mask: Tensor | None = None,
                condition: Tensor | None = None) -> Tensor:
        """Logits [B, T, V_out] of ``tokens`` [B, T].

        ``positions`` [B, T] overrides the position ids (default ``0..T-1``). ``attn_mask`` bool [B, T, T]
        (True = may attend) replaces the causal mask; without it attention is causal. ``condition`` is the
        conditioning input the network was built for (see the class docstring).
        """
        return self.head(self._features(tokens, positions, attn_mask, condition))

    def logits_at(self, tokens: Tensor, where: Tensor, *, condition: Tensor | None = None) -> Tensor:
        """Logits [N, V_out] of the positions selected by ``where`` [B, T]; the head runs at those positions only."""
        check_where(tokens, where)
        return self.head(self._features(tokens, None, None, condition)[where])

    def _features(self, tokens: Tensor, positions: Tensor | None, attn_mask: Tensor | None,
                  condition: Tensor | None) -> Tensor:
        """The head's inputs [B, T, d_model] at ``tokens`` (the final LayerNorm applied)."""
        self._check_condition(condition, tokens.shape[0])
        if attn_mask is not None and attn_mask.shape[-2:] != (tokens.shape[1], tokens.shape[1]):
            raise ValueError(f"attn_mask must be [B, T, T] for T={tokens.shape[1]}, got {tuple(attn_mask.shape)}")
        if self.prefix_len:
            assert condition is not None
            x, rope, attn_mask = self._with_prefix(tokens, positions, attn_mask, condition, 0)
        else:
            x, rope = self._embed(tokens, positions, 0)
            if self.cond_proj is not None:
                x = x + self.cond_proj(condition)[:, None, :]
        for block in self.blocks:
            x = block(x, rope=rope, attn_mask=attn_mask)
        return self.final_norm(x[:, self.prefix_len:])

    def new_cache(self, batch_size: int, max_len: int, *, device: Any = None, dtype: Any = None) -> KVCache:
        """An empty cache with room for ``max_len`` positions: per layer, keys and values [B, H, max_len, head_dim].

        ``device``/``dtype`` default to those of the parameters. The buffers are allocated once; :meth:`step`
        writes into them in place.
        """
        weight = self.tok_emb.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        n_heads = self.config.n_heads
        shape = (batch_size, n_heads, max_len, self.config.d_model // n_heads)
        keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.blocks]
        values = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.blocks]
        return KVCache(keys, values)

    def step(self, tokens: Tensor, cache: KVCache, positions: Tensor | None = None,
             attn_mask: Tensor | None = None, condition: Tensor | None = None) -> Tensor:
        """Append ``tokens`` [B, T_new] to ``cache`` and return their logits [B, T_new, V_out].

        The new tokens attend to the cached prefix and causally among themselves; their default positions are
        ``cache.length .. cache.length + T_new - 1``. ``cache.length`` advances by ``T_new``. ``attn_mask`` bool
        [B, T_new, cache.length + T_new] (True = may attend) replaces that, e.g. to drop entries of a row that a
        backspace deleted (a per-row crop of the cache). ``condition`` is given on every call; with a prefix, the
        first call (empty cache) writes the prefix into the cache first, and ``cache.length`` counts it.
        """
        batch, length = tokens.shape
        self._check_condition(condition, batch)
        x: Tensor | None
        rope: Rope | None
        if self.prefix_len and cache.length == 0:
            assert condition is not None
            x, rope, attn_mask = self._with_prefix(tokens, positions, attn_mask, condition, 0)
            length += self.prefix_len
        else:
            if self.prefix_len:
                positions = None if positions is None else positions + self.prefix_len
                if attn_mask is not None:
                    seen = torch.ones(*attn_mask.shape[:-1], self.prefix_len, dtype=torch.bool, device=tokens.device)
                    attn_mask = torch.cat([seen, attn_mask], dim=-1)
            x, rope = None, None  # embedded below, once the cache is checked
        start, end = cache.length, cache.length + length
        if len(cache.keys) != len(self.blocks):
            raise ValueError(f"cache has {len(cache.keys)} layers, this network {len(self.blocks)}")
        if cache.keys[0].shape[0] != batch:
            raise ValueError(f"cache was made for batch size {cache.keys[0].shape[0]}, got tokens for {batch}")
        if end > cache.capacity:
            raise ValueError(f"cache capacity {cache.capacity} is too small for {end} positions")
        if x is None:
            x, rope = self._embed(tokens, positions, start)
            if self.cond_proj is not None and not self.prefix_len:
                x = x + self.cond_proj(condition)[:, None, :]
        for block, k, v in zip(self.blocks, cache.keys, cache.values, strict=True):
            x = block(x, rope=rope, attn_mask=attn_mask, kv_cache=(k, v), cache_start=start)
        cache.length = end
        return self.head(self.final_norm(x[:, x.shape[1] - tokens.shape[1]:]))

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token: ``6 N + 12 n_layers d_model seq_len``.

        The PaLM / nanoGPT estimate. ``6 N``: each weight used in a matmul costs 2 FLOPs per token forward and 4
        backward; ``N`` counts every parameter except the embedding lookup tables (the position table and the
        input token table; the output head counts, and a tied matrix is counted once, for its matmul).
        ``12 n_layers d_model seq_len``: the attention scores and weighted sum (2 matmuls of
        ``d_model x seq_len`` per token per layer, times 2 FLOPs, times 3 for forward + backward). Like PaLM, it
        counts the full ``seq_len x seq_len`` square, although a causal mask makes half of it unnecessary.
        """
        n_params = self.num_parameters(trainable_only=False)
        if self.pos_emb is not None:
            n_params -= self.pos_emb.weight.numel()
        if not self.tied:
            n_params -= self.tok_emb.weight.numel()
        return 6.0 * n_params + 12.0 * self.config.n_layers * self.config.d_model * seq_len
