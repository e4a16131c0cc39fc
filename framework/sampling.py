"""``anyorder sample``: draw N samples from a run, sharded over devices, into one file.

Samples that carry generation orders (``extras["order"]``, :data:`ORDER_KEY`) get their orders saved and pictured
beside the file; the helpers for that are here, for every command that draws such samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anyorder.atomic import write_json, write_text, write_with
from anyorder.errors import ConfigError
from anyorder.runs import package_versions

ORDER_KEY = "order"
"""The key of the generation orders in ``Samples.extras`` (and in the ``extras`` of ``predict_step`` results)."""


def save_orders(path: Path, tokens: torch.Tensor, orders: torch.Tensor, lengths: torch.Tensor) -> None:
    """Write ``tokens``, ``orders`` and ``lengths`` as int64 arrays to the ``.npz`` file ``path`` (atomically; plain
    arrays, so ``np.load`` reads it without pickle)."""
    t, o, n = (x.long().cpu().numpy() for x in (tokens, orders, lengths))
    write_with(path, lambda f: np.savez(f, tokens=t, orders=o, lengths=n))


def log_pictures(cfg: Any, run_dir: Path, step: int, pictures: dict[str, Path], logger: Any = None) -> None:
    """Log the picture files (``{key: path}``) to ``logger``, else to the run's own logger (built and finished
    here); a CSV logger keeps them on disk only."""
    from anyorder.loggers import build_logger, finish, log_image

    if not pictures:
        return
    own = logger is None
    if own:
        logger = build_logger(cfg, run_dir)
    try:
        if logger:
            for key, path in pictures.items():
                log_image(logger, key, path, step)
    finally:
        if own:
            finish(logger)


def picture_keys(prefix: str, stem: Path, paths: list[Path]) -> dict[str, Path]:
    """Logger keys of the pictures written from ``stem``: ``<prefix>/<what>`` for ``<stem>-<what>.png``."""
    return {f"{prefix}/{p.stem[len(stem.name) + 1:] or p.stem}": p for p in paths}


class SampleRequests:
    """Requests ``{"index": i, "size": n}`` covering ``num`` samples; rank r takes requests r, r+W, ...

    The split into requests is a function of ``num`` and ``batch_size`` only (request i holds samples
    ``i * batch_size ...`` and is seeded by i), so the samples do not depend on the number of devices. A rank left
    without a request (fewer requests than ranks) still takes one: the empty request ``{"index": -1, "size": 0}``,
    since every rank must run the predict loop (Lightning refuses a rank with nothing to iterate); its result is
    dropped by :meth:`keep`.
    """

    EMPTY = -1
    """The index of the empty request of a rank that has no samples to draw."""

    def __init__(self, num: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"SampleRequests: need batch_size >= 1 and 0 <= rank < world_size; got {batch_size=}, "
                             f"{rank=}, {world_size=}")
        self.sizes = [min(batch_size, num - s) for s in range(0, num, batch_size)]
        self.mine = list(range(rank, len(self.sizes), world_size))

    def __len__(self) -> int:
        return max(1, len(self.mine))

    def __iter__(self) -> Iterator[dict[str, int]]:
        if not self.mine:
            yield {"index": self.EMPTY, "size": 0}
        for i in self.mine:
            yield {"index": i, "size": self.sizes[i]}

    @classmethod
    def keep(cls, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The results of real requests, in request order (the empty requests' results dropped)."""
        return sorted((r for r in results if int(r["index"]) != cls.EMPTY), key=lambda r: int(r["index"]))


def sample_run(run_dir: str | Path, *, num: int, out: str | Path, which: str = "last",
               overrides: list[str] | tuple[str, ...] = (), score_samples: bool = True) -> dict[str, Any] | None:
    """Write ``num`` samples of the run to ``out`` (``.txt``: one per line; ``.jsonl``: text and tokens) with a
    ``<out>.meta.json`` protocol beside it. With ``score_samples``, the run's metrics and the dataset's suite score
    them into ``<out>.scores.json``, a picture is drawn when the dataset can, and both go to the run's logger.
    Returns the protocol on rank 0, ``None`` elsewhere."""
    from anyorder.build import build_trainer, restore_run

    check_output(out, num)
    restored = restore_run(run_dir, which=which, overrides=overrides)
    trainer = build_trainer(restored.cfg, logger=False, enable_progress_bar=False)
    restored.datamodule.setup()
    checkpoint = str(restored.checkpoint.relative_to(restored.run_dir))
    return draw_to_file(trainer, restored.module, restored.datamodule, restored.cfg, restored.run_dir, num=num,
                        out=Path(out), checkpoint=checkpoint, step=restored.step, score_samples=score_samples)


def full_suite(cfg: Any, datamodule: Any) -> list[Any]:
    """The metric sections samples are scored by: the run's metrics plus the dataset's own suite, each name once (a
    full evaluation, not only the cheap validation metrics)."""
    sections = list(cfg.metrics)
    named = {s["name"] for s in sections}
    return sections + [s for s in datamodule.default_metrics() if s["name"] not in named]


def check_output(out: str | Path, num: int) -> None:
    """Reject an output name or count that :func:`draw_to_file` cannot serve, before any work."""
    if Path(out).suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"--out {str(out)!r}: use a .txt (one sample per line) or .jsonl file name")
    if num < 1:
        raise ConfigError("the number of samples must be at least 1")


def draw_to_file(trainer: Any, model: Any, datamodule: Any, cfg: Any, run_dir: Path, *, num: int, out: Path,
                 checkpoint: str, step: int, score_samples: bool = True, logger: Any = None) -> dict[str, Any] | None:
    """Draw ``num`` samples with ``trainer.predict`` (sharded over its devices), write them with their protocol on
    rank 0, and score, draw and log them there (to ``logger``, else the run's own logger). Every rank must call it."""
    batch = max(1, int(cfg.sample.batch_size))
    requests = SampleRequests(num, batch, trainer.global_rank, trainer.world_size)
    from anyorder.module import gather_objects

    results = trainer.predict(model, dataloaders=requests, return_predictions=True) or []
    gathered = SampleRequests.keep(gather_objects(list(results)))
    if not trainer.is_global_zero:
        return None
    objs: list[Any] = []
    token_lists: list[list[int]] = []
    stats_sum: dict[str, float] = {}
    for r in gathered:
        for i in range(len(r["lengths"])):
            length = int(r["lengths"][i])
            objs.append(datamodule.decode(r["tokens"][i], length))
            token_lists.append(r["tokens"][i][:length].tolist())
        for k, v in r["stats"].items():
            stats_sum[k] = stats_sum.get(k, 0.0) + v * len(r["lengths"])
    order_files = _keep_orders(gathered, datamodule, out)
    texts = [datamodule.to_text(o) for o in objs]
    if out.suffix == ".txt":
        write_text(out, "".join(t.replace("\n", "\\n") + "\n" for t in texts))
    else:
        write_text(out, "".join(json.dumps({"i": i, "sample": t, "tokens": tk}) + "\n"
                                for i, (t, tk) in enumerate(zip(texts, token_lists, strict=True))))
    meta = {
        "file": out.name,
        "num_samples": len(texts),
        "run": str(run_dir),
        "checkpoint": checkpoint,
        "step": step,
        "ema_weights": model.ema is not None and bool(cfg.sample.use_ema),
        "settings": dict(cfg.sample),
        "seed": int(cfg.seed),
        "seeding": "request i (of sample.batch_size samples) uses a generator seeded by (seed, i)",
        "world_size": trainer.world_size,
        "stats": {k: v / max(1, len(texts)) for k, v in stats_sum.items()},
        "mean_length": sum(len(t) for t in token_lists) / max(1, len(token_lists)),
        "packages": package_versions(),
    }
    pictures: list[Path] = []
    if order_files is not None:
        meta["orders"], pictures = order_files
        meta["order_pictures"] = [str(p) for p in pictures]
    write_json(out.with_name(out.name + ".meta.json"), meta)
    images = picture_keys("samples", out.with_name(out.stem), pictures)
    sections = full_suite(cfg, datamodule)
    if sections and score_samples:
        _score_and_log(datamodule, cfg, run_dir, step, objs, sections, out, meta, logger, images)
    elif images and logger is not False:
        log_pictures(cfg, run_dir, step, images, logger)
    return meta


def _keep_orders(results: list[dict[str, Any]], datamodule: Any, out: Path) -> tuple[str, list[Path]] | None:
    """When every result carries generation orders (``extras["order"]``, any-order objectives): write tokens and
    orders to ``<out stem>.orders.npz`` and the dataset's order pictures (``<out stem>-*.png``); return the npz name
    and the pictures, else None."""
    if not results or not all(ORDER_KEY in r.get("extras", {}) for r in results):
        return None
    width = max(r["tokens"].shape[1] for r in results)
    if any(r["tokens"].shape[1] != width or r["extras"][ORDER_KEY].shape != r["tokens"].shape for r in results):
        return None  # variable widths or orders that do not fit the tokens: nothing to picture consistently
    tokens = torch.cat([r["tokens"] for r in results]).long()
    orders = torch.cat([r["extras"][ORDER_KEY] for r in results]).long()
    lengths = torch.cat([r["lengths"] for r in results]).long()
    npz = out.with_name(out.stem + ".orders.npz")
    save_orders(npz, tokens, orders, lengths)
    return npz.name, [Path(p) for p in datamodule.render_orders(tokens, orders, out.with_name(out.stem))]


def _score_and_log(datamodule: Any, cfg: Any, run_dir: Path, step: int, objs: list[Any], sections: list[Any],
                   out: Path, meta: dict[str, Any], logger: Any, images: dict[str, Path] | None = None) -> None:
    """Score the samples with the run's metrics (or the dataset's suite), write ``<out>.scores.json``, draw them if the
    dataset can, and log both (and the pictures ``images``, ``{key: path}``) to the run's logger at the checkpoint's
    step."""
    from lightning.pytorch.loggers import Logger
    from omegaconf import OmegaConf

    from anyorder.loggers import build_logger, finish, log_image
    from anyorder.sample_eval import score

    plain = [OmegaConf.to_container(s, resolve=True) if not isinstance(s, dict) else s for s in sections]
    result = score(datamodule, objs, plain)  # type: ignore[arg-type]
    picture = out.with_name(out.stem + ".png")
    drawn = datamodule.render(objs[:48], picture)
    if drawn:
        meta["picture"] = str(picture)
    report = {**result, "protocol": {**meta, "dataset_protocol": datamodule.protocol()}}
    write_json(out.with_name(out.name + ".scores.json"), report)
    own = logger is None
    if own:
        logger = build_logger(cfg, run_dir)
    try:
        if isinstance(logger, Logger):
            logger.log_metrics({f"samples/{k}": v for k, v in result["values"].items()}, step=step)
            if drawn:
                log_image(logger, "samples/grid", picture, step)
            for key, path in (images or {}).items():
                log_image(logger, key, path, step)
    finally:
        if own:
            finish(logger)
    meta["scores"] = result["values"]
