"""LSTM networks: :class:`LSTMEncoder` (one summary vector per sequence) and :class:`LSTMDecoder` (a causal LM).

The decoder is a :class:`~anyorder_plugins.causal.network.CausalNetwork`, so the causal family's sampler steps it;
its "cache" is :class:`LSTMState`, the recurrent state (h, c) after the tokens fed so far, which is all an LSTM
needs to continue. Unlike a KV cache it cannot be rewound (cropped) to an earlier position, and an LSTM cannot
take an attention mask: it always reads every earlier token of its row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from anyorder.network import Conditioning, Network, NetworkIO, Output
from anyorder_plugins.causal.network import CausalNetwork, KVCache, check_where
from anyorder_plugins.lstm.config import LSTMDecoderConfig, LSTMEncoderConfig


def _lookup_free_parameters(network: nn.Module, table: nn.Embedding, tied: bool) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding table (a lookup), unless the
    head shares it."""
    n = sum(p.numel() for p in network.parameters())
    return n if tied else n - table.weight.numel()


class LSTMEncoder(Network):
    """Embedding, LSTM over the real tokens of each (padded) sequence, linear map of the last layer's final hidden
    state (both directions' when bidirectional) to ``io.output_dim`` numbers.

    ``forward(tokens, lengths=None)`` reads ``tokens`` [B, T] whose first ``lengths[b]`` entries are real (all T when
    ``lengths`` is None) and returns [B, io.output_dim]; the padding never reaches the result (the sequences are
    packed). A sequence of length 0 has the LSTM's initial state, zeros, as its final state.
    """

    Config = LSTMEncoderConfig
    conditionings = frozenset({Conditioning.NONE})
    outputs = frozenset({Output.POOLED})

    def __init__(self, config: LSTMEncoderConfig, io: NetworkIO) -> None:
        super().__init__(config, io)
        self.directions = 2 if config.bidirectional else 1
        self.tok_emb = nn.Embedding(io.input_vocab_size, config.d_embed)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.d_embed, config.d_hidden, config.n_layers, batch_first=True,
                            bidirectional=config.bidirectional, dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.proj = nn.Linear(self.directions * config.d_hidden, io.output_dim)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The summary [B, output_dim] of ``tokens`` [B, T] with ``lengths`` [B] real tokens each."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        b, t = tokens.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=tokens.device)
        if lengths.shape != (b,):
            raise ValueError(f"lengths must be [batch] = [{b}], got shape {tuple(lengths.shape)}")
        c = self.config
        if t == 0:
            final = tokens.new_zeros((b, self.directions * c.d_hidden), dtype=self.proj.weight.dtype)
            return self.proj(final)
        lengths_cpu = lengths.detach().to("cpu", torch.long)
        if bool((lengths_cpu < 0).any()) or bool((lengths_cpu > t).any()):
            raise ValueError(f"lengths must be in [0, {t}], got values in [{int(lengths_cpu.min())}, "
                             f"{int(lengths_cpu.max())}]")
        x = self.dropout(self.tok_emb(tokens))
        # pack_padded_sequence refuses empty rows: run them on one token and zero their state afterwards.
        packed = pack_padded_sequence(x, lengths_cpu.clamp(min=1), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        last = h.view(c.n_layers, self.directions, b, c.d_hidden)[-1]  # [directions, B, H], in the input's order
        final = last.transpose(0, 1).reshape(b, self.directions * c.d_hidden)
        final = final.masked_fill((lengths == 0).to(final.device)[:, None], 0.0)
        return self.proj(final)

    def flops_per_token(self, seq_len: int) -> float:
        """6 x the parameters used in matmuls (the embedding table is a lookup); the projection runs once per
        sequence, counted per token as an upper bound."""
        return 6.0 * _lookup_free_parameters(self, self.tok_emb, tied=False)


class LSTMState(KVCache):
    """The incremental-decoding state of an :class:`LSTMDecoder`: (h, c) [n_layers, B, d_hidden] after ``length``
    tokens of each row, for up to ``capacity`` tokens.

    ``h`` and ``c`` are None until the first :meth:`LSTMDecoder.step`, which sets the initial state (from the
    condition, for a conditioned decoder). ``crop`` can only keep the whole state: an LSTM's state summarises its
    prefix and cannot be rewound to an earlier position.
    """

    def __init__(self, batch_size: int, capacity: int, *, device: Any = None, dtype: Any = None) -> None:
        super().__init__([], [])
        self.batch_size = batch_size
        self._capacity = capacity
        self.device, self.dtype = device, dtype
        self.h: Tensor | None = None
        self.c: Tensor | None = None

    @property
    def capacity(self) -> int:
        return self._capacity

    def crop(self, length: int) -> None:
        """Allowed only for ``length == self.length`` (a no-op); an LSTM state cannot go back."""
        if length != self.length:
            raise ValueError(f"an LSTM state cannot be cropped from {self.length} to {length} tokens: the recurrent "
                             f"state summarises the whole prefix; re-run the decoder on the shorter prefix instead")


class LSTMDecoder(CausalNetwork):
    """Left-to-right LSTM language model: embedding (+ z), stacked LSTM, linear head over ``io.output_vocab_size``.

    Conditioned on a vector z (``condition`` [B, condition_dim]), a linear map of z gives the initial state of every
    layer: h0 = tanh(W_h z + b_h) (tanh, because an LSTM's h = o * tanh(c) always lies in (-1, 1)) and
    c0 = W_c z + b_c. With ``condition_inputs``, z is also concatenated to every input embedding. Without a
    condition the initial state is zero (and ``condition_inputs`` has no effect).

    ``forward(tokens, positions=None, attn_mask=None, condition=None)`` returns logits [B, T, V_out]. An LSTM has no
    position ids, so ``positions`` is ignored, and it cannot take an attention mask: ``attn_mask`` must be None.
    :meth:`step` continues an :class:`LSTMState`; feeding a sequence in any number of steps gives the logits of the
    full forward. The LSTM has no limit on length; ``io.max_len`` bounds only what the sampler asks of it.
    """

    Config = LSTMDecoderConfig
    conditionings = frozenset({Conditioning.NONE, Conditioning.VECTOR})

    def __init__(self, config: LSTMDecoderConfig, io: NetworkIO) -> None:
        super().__init__(config, io)
        cond = io.condition_dim if io.conditioning is Conditioning.VECTOR else 0
        self.condition_inputs = bool(config.condition_inputs and cond)
        self.tok_emb = nn.Embedding(io.input_vocab_size, config.d_embed)
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.lstm = nn.LSTM(config.d_embed + (cond if self.condition_inputs else 0), config.d_hidden,
                            config.n_layers, batch_first=True,
                            dropout=config.output_dropout if config.n_layers > 1 else 0.0)
        self.output_dropout = nn.Dropout(config.output_dropout)
        self.head = nn.Linear(config.d_hidden, io.output_vocab_size)
        self.init_state = nn.Linear(cond, 2 * config.n_layers * config.d_hidden) if cond else None
        # Tying needs equal shapes; with different vocabularies the option is documented to have no effect.
        self.tied = bool(config.tie_embeddings and io.input_vocab_size == io.output_vocab_size)
        if self.tied:
            self.head.weight = self.tok_emb.weight

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _check(self, tokens: Tensor, attn_mask: Tensor | None, condition: Tensor | None) -> None:
        """Clear errors for a wrong token shape, an attention mask, or a condition that does not fit ``io``."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        if attn_mask is not None:
            raise ValueError("an LSTM decoder cannot take an attention mask: each position reads every earlier token "
                             "of its row through the recurrent state; pass attn_mask=None (use a transformer for "
                             "custom masks)")
        if self.init_state is None:
            if condition is not None:
                raise ValueError("this network was built without a conditioning input; got a condition")
            return
        want = (tokens.shape[0], self.io.condition_dim)
        if condition is None or tuple(condition.shape) != want:
            got = None if condition is None else tuple(condition.shape)
            raise ValueError(f"condition must have shape {want} (vector conditioning), got {got}")

    def _initial_state(self, condition: Tensor | None, batch: int, device: Any, dtype: Any) -> tuple[Tensor, Tensor]:
        """(h0, c0) [n_layers, B, d_hidden]: zeros, or the linear map of the condition (tanh on h0)."""
        c = self.config
        if self.init_state is None:
            zeros = torch.zeros(c.n_layers, batch, c.d_hidden, device=device, dtype=dtype)
            return zeros, zeros
        assert condition is not None
        s = self.init_state(condition).view(batch, 2, c.n_layers, c.d_hidden)
        h0 = torch.tanh(s[:, 0]).transpose(0, 1).contiguous()
        c0 = s[:, 1].transpose(0, 1).contiguous()
        if dtype is not None:
            h0, c0 = h0.to(dtype), c0.to(dtype)
        return h0, c0

    def _run(self, tokens: Tensor, state: tuple[Tensor, Tensor],
             condition: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The head's inputs [B, T, d_hidden] at ``tokens`` read from ``state`` (output dropout applied), and the
        state after them."""
        x = self.input_dropout(self.tok_emb(tokens))
        if self.condition_inputs:
            assert condition is not None
            x = torch.cat([x, condition[:, None, :].expand(-1, tokens.shape[1], -1).to(x.dtype)], dim=-1)
        y, state = self.lstm(x, state)
        return self.output_dropout(y), state

    # -- the CausalNetwork interface -----------------------------------------------------------------------------

    def forward(self, tokens: Tensor, positions: Tensor | None = None, attn_mask: Tensor | None = None,
                condition: Tensor | None = None) -> Tensor:
        """Logits [B, T, V_out] of ``tokens`` [B, T] (``positions`` ignored; ``attn_mask`` must be None)."""
        return self.head(self._features(tokens, attn_mask, condition))

    def logits_at(self, tokens: Tensor, where: Tensor, *, condition: Tensor | None = None) -> Tensor:
        """Logits [N, V_out] of the positions selected by ``where`` [B, T]; the head runs at those positions only
        (dropout is drawn over all positions first, so training draws the random numbers :meth:`forward` draws)."""
        check_where(tokens, where)
        return self.head(self._features(tokens, None, condition)[where])

    def _features(self, tokens: Tensor, attn_mask: Tensor | None, condition: Tensor | None) -> Tensor:
        """The head's inputs [B, T, d_hidden] for a whole sequence read from the initial state."""
        self._check(tokens, attn_mask, condition)
        state = self._initial_state(condition, tokens.shape[0], tokens.device, self.tok_emb.weight.dtype)
        hidden, _ = self._run(tokens, state, condition)
        return hidden

    def new_cache(self, batch_size: int, max_len: int, *, device: Any = None, dtype: Any = None) -> LSTMState:
        """An empty :class:`LSTMState` for ``batch_size`` rows and up to ``max_len`` tokens (``device``/``dtype``
        default to the parameters'). Its initial state is set by the first :meth:`step`."""
        weight = self.tok_emb.weight
        return LSTMState(batch_size, max_len, device=weight.device if device is None else device,
                         dtype=weight.dtype if dtype is None else dtype)

    def step(self, tokens: Tensor, cache: KVCache, positions: Tensor | None = None,
             attn_mask: Tensor | None = None, condition: Tensor | None = None) -> Tensor:
        """Feed ``tokens`` [B, T_new] after the state in ``cache`` and return their logits [B, T_new, V_out].

        ``condition`` is given on every call (the first sets the initial state from it; with ``condition_inputs``
        every call reads it). ``cache.length`` advances by ``T_new``; ``positions`` is ignored and ``attn_mask``
        must be None.
        """
        self._check(tokens, attn_mask, condition)
        if not isinstance(cache, LSTMState):
            raise ValueError(f"an LSTM decoder steps an LSTMState (from its new_cache), got {type(cache).__name__}")
        batch, length = tokens.shape
        if batch != cache.batch_size:
            raise ValueError(f"cache was made for batch size {cache.batch_size}, got tokens for {batch}")
        end = cache.length + length
        if end > cache.capacity:
            raise ValueError(f"cache capacity {cache.capacity} is too small for {end} tokens")
        if cache.h is None or cache.c is None:
            state = self._initial_state(condition, batch, tokens.device, cache.dtype)
        else:
            state = (cache.h, cache.c)
        hidden, (cache.h, cache.c) = self._run(tokens, state, condition)
        cache.length = end
        return self.head(hidden)

    def flops_per_token(self, seq_len: int) -> float:
        """6 x the parameters used in matmuls per token (the input embedding table is a lookup, unless tied to the
        head; the initial-state map runs once per sequence, counted per token as an upper bound)."""
        return 6.0 * _lookup_free_parameters(self, self.tok_emb, self.tied)
