"""The base of divergence plugins: how an imitation objective turns per-step implicit rewards into a loss.

An imitation objective in the IQ-Learn form (SequenceMatch) scores each action by an implicit reward
r = Q(s, a) - gamma V(s'). A divergence plugin says what the expert (data) term does with r and which penalty the
mixture of data and the model's own generations pays. ``divergence`` is a plugin kind that the sequence_match
family declares (entry-point group ``anyorder.kinds``: ``divergence = anyorder_plugins.sequence_match.divergence:
Divergence``); its plugins are registered under the entry-point group ``anyorder.divergences``, must subclass
:class:`Divergence`, and are built as ``cls(options)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor


class Divergence:
    """phi on the expert term, and a penalty on the mixture; the default is the plain (KL / behaviour-cloning) form:
    phi(r) = r and no penalty, which with the value term on data alone is position-weighted MLE."""

    Config: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config

    def expert(self, r: Tensor) -> Tensor:
        """phi(r), elementwise: the expert term is -sum_t w_t phi(r_t) over data."""
        return r

    def mixture_penalty(self, r: Tensor) -> Tensor | None:
        """The elementwise penalty summed with weights w_t over data and generations, or None for none."""
        return None
