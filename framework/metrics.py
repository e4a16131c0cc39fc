"""Base class of sample metrics: scores computed on decoded samples, correct under DDP.

A metric plugin subclasses :class:`SampleMetric`, a ``torchmetrics.Metric``. It declares its states with
``add_state`` (tensors, or lists of tensors with ``dist_reduce_fx="cat"`` for set-level quantities such as
uniqueness), turns domain objects into those states in :meth:`update`, and returns named values from
:meth:`compute`. torchmetrics synchronises the states over ranks before ``compute``, so every rank's samples
count once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torchmetrics
from torch import Tensor


class SampleMetric(torchmetrics.Metric):
    """Base of metric plugins: ``cls(config, datamodule)``; ``update(samples)``; ``compute() -> {name: value}``."""

    Config: ClassVar[type]
    full_state_update = False

    def __init__(self, config: Any, datamodule: Any) -> None:
        super().__init__()
        self.config = config
        self.datamodule = datamodule

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        raise NotImplementedError

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        raise NotImplementedError
