"""What several bench scripts share: building a model and its data from a config, optionally with another objective.

Imported by the scripts in this folder as ``from common import ...`` (a script's own folder is on ``sys.path``).
"""

from __future__ import annotations

from typing import Any

import torch


def build(config: str, objective: dict[str, Any] | None = None,
          overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, Any, Any]:
    """The objective (built for the data space, outside a Trainer), the set-up DataModule and the validated run
    config of ``config`` with ``key=value`` ``overrides``, its objective section replaced by ``objective`` (so two
    objectives can be compared on the same network and data). Call the objective's hooks with the standalone
    contexts of :mod:`anyorder.objective`; read the run's settings from the config (``cfg.train...``)."""
    from omegaconf import OmegaConf

    from anyorder.build import build_datamodule, build_objective
    from anyorder.config import load_config, validate

    cfg = load_config(config, overrides)
    if objective is not None:
        plain = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(plain, dict)
        cfg = validate(OmegaConf.create({**plain, "objective": objective}), source=f"{config} with {objective}")
    data = build_datamodule(cfg)
    data.prepare_data()
    data.setup()
    torch.manual_seed(int(cfg.seed))
    model = build_objective(cfg, data.space)
    return model, data, cfg
