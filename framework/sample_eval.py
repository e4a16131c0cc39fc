"""Scoring samples with metric plugins, outside training: ``anyorder evaluate-samples`` and after ``anyorder sample``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anyorder.atomic import read_text_input, write_json
from anyorder.config import plugin_options, validate_plugin_section
from anyorder.errors import ConfigError
from anyorder.registry import REGISTRY
from anyorder.runs import package_versions


def read_samples(path: str | Path) -> list[str]:
    """Samples in their text form: one per line of a ``.txt`` file, or the ``sample`` field of a ``.jsonl`` file."""
    path = Path(path)
    lines = read_text_input(path, "samples file").splitlines()
    if path.suffix == ".jsonl":
        try:
            return [json.loads(line)["sample"] for line in lines if line.strip()]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{str(path)!r}: every line must be a JSON object with a 'sample' field ({exc})") from exc
    return lines


def score(datamodule: Any, samples: Sequence[Any], metric_sections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every metric plugin's values on ``samples`` (domain objects), with the plugin and its distribution."""
    values: dict[str, float] = {}
    producer: dict[str, str] = {}  # result name -> the metric plugin that produced it
    metrics: list[dict[str, Any]] = []
    for section in metric_sections:
        impl = REGISTRY.implementation("metric", section["name"])
        metric = impl(plugin_options("metric", section), datamodule)
        # Every sample is in this process (gathered on rank 0 after distributed sampling): no reduction over ranks,
        # which would wait for ranks that have finished.
        metric.distributed_available_fn = lambda: False  # the constructor option, set after construction
        start = time.perf_counter()
        metric.update(list(samples))
        result = {k: float(v) for k, v in metric.compute().items()}
        info = REGISTRY.info("metric", section["name"])
        metrics.append({**section, "distribution": info.origin, "seconds": round(time.perf_counter() - start, 3)})
        merge_results(values, producer, result, str(section["name"]))
    return {"values": values, "metrics": metrics}


def merge_results(values: dict[str, float], producer: dict[str, str], result: dict[str, float], metric: str) -> None:
    """Add the metric plugin ``metric``'s ``result`` to ``values`` (``producer``: which plugin made each name), refusing
    a result name that an earlier plugin (or an earlier instance of the same one) already produced."""
    for key, value in result.items():
        if key in producer:
            raise ConfigError(f"metric results clash: {producer[key]!r} and {metric!r} both produce {key!r}; "
                              "drop one of them or give them options that name their results apart")
        producer[key] = metric
        values[key] = value


def check_distinct_sections(sections: Sequence[dict[str, Any]], where: str = "--metrics") -> None:
    """Refuse the same metric plugin listed twice with the same options (it would score the samples twice)."""
    seen: dict[str, int] = {}
    for i, section in enumerate(sections):
        key = json.dumps(section, sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(f"{where}: metric {section['name']!r} is listed twice with the same options (entries "
                              f"{seen[key]} and {i}); list each metric once")
        seen[key] = i


def evaluate_samples(path: str | Path, dataset: dict[str, Any], *, metrics: Sequence[dict[str, Any]] | None = None,
                     out: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Score the samples in ``path`` against the dataset plugin section ``dataset`` and write a JSON report.

    ``metrics`` defaults to the dataset's own suite (:meth:`~anyorder.data.DiscreteDataModule.default_metrics`).
    """
    texts = read_samples(path)  # the file first: a bad one fails before the dataset is loaded
    if not texts:
        raise ConfigError(f"samples file {str(path)!r} holds no samples (0 lines); there is nothing to score")
    dataset = validate_plugin_section("dataset", dataset, "data", "--dataset")
    impl = REGISTRY.implementation("dataset", dataset["name"])
    datamodule = impl(plugin_options("dataset", dataset), seed=seed)
    datamodule.prepare_data()
    datamodule.setup()
    sections = list(metrics) if metrics is not None else datamodule.default_metrics()
    if not sections:
        raise ConfigError(f"dataset {dataset['name']!r} names no default metrics; pass --metrics name[,name...]")
    sections = [validate_plugin_section("metric", m, f"metrics[{i}]", "--metrics") for i, m in enumerate(sections)]
    check_distinct_sections(sections)
    result = score(datamodule, [datamodule.parse_text(t) for t in texts], sections)
    report = {
        **result,
        "protocol": {
            "samples_file": str(path),
            "num_samples": len(texts),
            "dataset": dataset,
            "dataset_protocol": datamodule.protocol(),
            "seed": seed,
            "packages": package_versions(),
        },
    }
    target = Path(out) if out else Path(str(path) + ".scores.json")
    write_json(target, report)
    report["written_to"] = str(target)
    return report


def format_table(values: dict[str, float]) -> str:
    """A two-column text table of metric values."""
    width = max([len(k) for k in values] + [6])
    return "\n".join(f"{k.ljust(width)}  {v:.6g}" for k, v in values.items())
