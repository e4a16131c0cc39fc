"""``anyorder evaluate``: the NLL of a split in nats and bits per token, with its standard error and protocol."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anyorder.atomic import write_json
from anyorder.runs import package_versions

LN2 = math.log(2.0)


def likelihood_report(cfg: DictConfig, model: Any, datamodule: Any, results: dict[str, float], *, split: str,
                      checkpoint: str, step: int, world_size: int, precision: str) -> dict[str, Any]:
    """The numbers and everything needed to reproduce them."""
    uses_ema = model.ema is not None and bool(cfg.eval.use_ema)
    reference = datamodule.reference()
    report: dict[str, Any] = {
        "metric": "negative log-likelihood per token",
        "nll_nats": results["nll"],
        "nll_nats_se": results["nll_se"],
        "bits_per_token": results["nll"] / LN2,
        "bits_per_token_se": results["nll_se"] / LN2,
        "perplexity": math.exp(results["nll"]),
        "num_sequences": int(results["num_sequences"]),
        "num_tokens": int(results["num_tokens"]),
        "reference": reference,
        "protocol": {
            "split": split,
            "likelihood": model.likelihood_kind,
            "estimator": model.likelihood_protocol(),
            "standard_error": "delta-method standard error of the per-token ratio, over datapoints",
            "tokens_counted": "every predicted variable of a datapoint, end-of-sequence included where the data has "
                              "variable length",
            "checkpoint": checkpoint,
            "step": step,
            "ema_weights": uses_ema,
            "world_size": world_size,
            "precision": precision,
            "seed": int(cfg.seed),
            "objective": OmegaConf.to_container(cfg.objective, resolve=True),
            "network": OmegaConf.to_container(cfg.network, resolve=True),
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "packages": package_versions(),
        },
    }
    if "entropy_rate_nats" in reference:
        report["excess_over_entropy_rate"] = results["nll"] / reference["entropy_rate_nats"] - 1.0
    if "sequence_entropy_nats_per_token" in reference:
        # What a perfect model scores on these sequences (the first tokens of a sequence carry more entropy).
        report["excess_over_true_nll"] = results["nll"] / reference["sequence_entropy_nats_per_token"] - 1.0
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    write_json(path, report)


def evaluate(run_dir: str | Path, *, which: str = "last", split: str | None = None,
             overrides: list[str] | tuple[str, ...] = (), out: str | Path | None = None) -> dict[str, Any] | None:
    """Evaluate a run's checkpoint on a split; writes ``eval/<split>-<which>.json`` and returns the report
    (``None`` on ranks other than 0)."""
    from anyorder.build import build_trainer, restore_run

    restored = restore_run(run_dir, which=which, overrides=overrides)
    cfg = restored.cfg
    split = split or str(cfg.eval.split)
    restored.datamodule.eval_batch_size = int(cfg.eval.batch_size)
    trainer = build_trainer(cfg, logger=False, enable_progress_bar=False)
    model = restored.model
    model.step_budget("eval")  # a budget the objective cannot honour is an error, not silently ignored
    restored.datamodule.test_split = split
    trainer.test(model, datamodule=restored.datamodule, verbose=False)
    if not trainer.is_global_zero or model.test_results is None:
        return None
    report = likelihood_report(
        cfg, model, restored.datamodule, model.test_results, split=split,
        checkpoint=str(restored.checkpoint.relative_to(restored.run_dir)), step=restored.step,
        world_size=trainer.world_size, precision=str(trainer.precision),
    )
    steps = int(cfg.eval.get("steps", 0) or 0)
    name = f"{split}-{which}" + (f"-steps{steps}" if steps else "")
    path = Path(out) if out else restored.run_dir / "eval" / f"{name}.json"
    write_report(path, report)
    report["written_to"] = str(path)
    return report
