"""Exponential moving average of a module's parameters, kept apart from the trained weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    """An EMA of the floating-point parameters of ``module``.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so early averages are not dominated
    by the random initialisation. :meth:`swapped` temporarily loads the averages into the module (for evaluation
    and sampling) and always restores the trained weights afterwards.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            n: p.detach().clone() for n, p in module.named_parameters() if p.dtype.is_floating_point
        }
        self._backup: dict[str, Tensor] | None = None

    @property
    def is_swapped(self) -> bool:
        """True while the averages are loaded into the module."""
        return self._backup is not None

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the averages towards the module's current parameters."""
        if self.is_swapped:
            raise RuntimeError("EMA.update called while the EMA weights are swapped in")
        params = dict(module.named_parameters())
        names = list(self.shadow)
        shadows = [self.shadow[n] for n in names]
        currents = [params[n].detach().to(self.shadow[n].device) for n in names]
        torch._foreach_lerp_(shadows, currents, 1.0 - self.current_decay())
        self.num_updates += 1

    @torch.no_grad()
    def swap_in(self, module: nn.Module) -> None:
        """Load the averages into ``module``, keeping the trained weights aside."""
        if self.is_swapped:
            return
        params = dict(module.named_parameters())
        self._backup = {n: params[n].detach().clone() for n in self.shadow}
        for n, s in self.shadow.items():
            params[n].copy_(s)

    @torch.no_grad()
    def swap_out(self, module: nn.Module) -> None:
        """Restore the trained weights."""
        if self._backup is None:
            return
        params = dict(module.named_parameters())
        for n, b in self._backup.items():
            params[n].copy_(b)
        self._backup = None

    def trained_weights(self) -> dict[str, Tensor]:
        """The trained (not averaged) values of the parameters that are currently swapped out."""
        if self._backup is None:
            raise RuntimeError("the EMA weights are not swapped in")
        return self._backup

    @contextmanager
    def swapped(self, module: nn.Module) -> Iterator[None]:
        """Context in which ``module`` holds the averaged weights."""
        already = self.is_swapped
        self.swap_in(module)
        try:
            yield
        finally:
            if not already:
                self.swap_out(module)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        shadow = state["shadow"]
        assert isinstance(shadow, dict)
        missing = set(self.shadow) - set(shadow)
        if missing:
            raise KeyError(f"EMA state lacks parameters: {sorted(missing)[:5]}")
        for n in self.shadow:
            self.shadow[n].copy_(shadow[n])
        self.num_updates = int(state["num_updates"])  # type: ignore[call-overload]
