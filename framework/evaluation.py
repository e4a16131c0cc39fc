"""``anyorder evaluate``: the NLL (or bound) of a split per token, its evaluation terms and statistics, with protocol."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from anyorder.atomic import write_json
from anyorder.runs import package_versions

if TYPE_CHECKING:
    from anyorder.module import EvaluationResult

LN2 = math.log(2.0)


def likelihood_report(cfg: DictConfig, module: Any, datamodule: Any, result: EvaluationResult, *, checkpoint: str,
                      step: int, world_size: int, precision: str) -> dict[str, Any]:
    """The numbers of an evaluation and everything needed to reproduce them."""
    uses_ema = module.ema is not None and bool(cfg.eval.use_ema)
    reference = datamodule.reference()
    kind, split = result.likelihood, result.split
    results = {"nll": result.nll}
    report: dict[str, Any] = {
        "metric": f"negative log-likelihood per token ({kind.value})" if kind.exact
        else f"negative {kind.value} on the log-likelihood, per token (an upper bound on the NLL)",
        "likelihood": kind.value,
        "label": kind.label,
        "nll_nats": result.nll,
        "nll_nats_se": result.nll_se,
        "bits_per_token": result.nll / LN2,
        "bits_per_token_se": result.nll_se / LN2,
        "nll_nats_per_sequence": result.nll_per_sequence,
        "perplexity": math.exp(result.nll),
        "num_sequences": result.num_sequences,
        "num_tokens": result.num_tokens,
        "terms": result.terms,
        "statistics": result.statistics,
        "reference": reference,
        "protocol": {
            "split": result.split,
            "likelihood": kind.value,
            "estimator": module.objective.likelihood_protocol(),
            "standard_error": "delta-method standard error of the per-token ratio, over datapoints; terms: standard "
                              "error of the mean per sequence",
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
        # The source's expected NLL per token over sequences of this length (first tokens included): what a perfect
        # model scores on average over sequences, not on the evaluated ones.
        report["excess_over_sequence_entropy"] = results["nll"] / reference["sequence_entropy_nats_per_token"] - 1.0
    if f"source_nll_nats_per_token_{split}" in reference:
        # The source's exact NLL per token on the evaluated sequences themselves: what a perfect model scores here.
        report["source_nll_nats_per_token"] = reference[f"source_nll_nats_per_token_{split}"]
        report["excess_over_source_nll"] = results["nll"] / report["source_nll_nats_per_token"] - 1.0
    return report


def flat_values(result: EvaluationResult, prefix: str) -> dict[str, float]:
    """An evaluation's numbers as ``{prefix/name: value}`` for a logger."""
    values = {f"{prefix}/nll": result.nll, f"{prefix}/nll_se": result.nll_se,
              f"{prefix}/bits_per_token": result.nll / LN2, f"{prefix}/num_sequences": float(result.num_sequences),
              f"{prefix}/num_tokens": float(result.num_tokens)}
    for name, term in result.terms.items():
        values.update({f"{prefix}/{name}": term["per_sequence"], f"{prefix}/{name}_per_token": term["per_token"]})
    values.update({f"{prefix}/{k}": v for k, v in result.statistics.items()})
    return values


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
    restored.datamodule.test_split = split
    trainer.test(restored.module, datamodule=restored.datamodule, verbose=False)
    result = restored.outputs.last_evaluation
    if not trainer.is_global_zero or result is None:
        return None
    report = likelihood_report(
        cfg, restored.module, restored.datamodule, result,
        checkpoint=str(restored.checkpoint.relative_to(restored.run_dir)), step=restored.step,
        world_size=trainer.world_size, precision=str(trainer.precision),
    )
    steps = int(cfg.eval.get("steps", 0) or 0)
    name = f"{split}-{which}" + (f"-steps{steps}" if steps else "")
    path = Path(out) if out else restored.run_dir / "eval" / f"{name}.json"
    write_report(path, report)
    report["written_to"] = str(path)
    return report
