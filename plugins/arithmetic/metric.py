"""The ``arithmetic_accuracy`` metric: the fraction of equation samples ``a op b=c`` whose answer is exactly right.

States are three counts summed over ranks, so under DDP every rank's samples count once, as on one device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from anyorder.metrics import SampleMetric
from anyorder_plugins.arithmetic.equations import is_correct
from anyorder_plugins.arithmetic.metric_config import ArithmeticAccuracyConfig


class ArithmeticAccuracy(SampleMetric):
    """``accuracy`` (correct / samples) and ``well_formed`` (parsable / samples) of decoded equation strings.

    Both are 0 when no sample was seen. The datamodule is not needed: the samples are self-contained equations.
    """

    Config = ArithmeticAccuracyConfig
    config: ArithmeticAccuracyConfig
    total: Tensor
    well_formed: Tensor
    correct: Tensor

    def __init__(self, config: ArithmeticAccuracyConfig, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        for name in ("total", "well_formed", "correct"):
            self.add_state(name, default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Count ``samples`` (decoded datapoints, read with ``str()``)."""
        checks = [is_correct(str(sample), self.config.base) for sample in samples]
        self.total += len(checks)
        self.well_formed += sum(ok for ok, _ in checks)
        self.correct += sum(right for _, right in checks)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``accuracy`` and ``well_formed`` as float32 fractions of all samples."""
        total = self.total.clamp(min=1).double()
        return {
            "accuracy": (self.correct / total).float(),
            "well_formed": (self.well_formed / total).float(),
        }
