"""``anyorder orders``: draw samples of an any-order run with their generation orders, and picture the orders.

An objective that records generation orders returns ``extras["order"]`` [B, D] with its samples (the key is
:data:`anyorder.sampling.ORDER_KEY`): entry d is the step (0..D-1) at which variable d was generated. This module
draws N samples, writes the tokens and orders (``orders.npz``), the samples' text form (``samples.txt``), the
dataset's pictures of the orders (the DataModule's ``render_orders`` hook; none for datasets without a layout) and a
protocol (``orders.json``), and logs the pictures to the run's logger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anyorder.atomic import write_json, write_text
from anyorder.errors import AnyorderError, ConfigError
from anyorder.sampling import ORDER_KEY, log_pictures, picture_keys, save_orders

SEED_STREAM = 0x0D
"""Mixed with the run's seed into the seed of ``anyorder orders`` (a stream of its own, apart from training's)."""


def check_orders(objective: str, extras: dict[str, Any], tokens: torch.Tensor) -> torch.Tensor:
    """The orders in ``extras`` (a LongTensor [B, D] like ``tokens``); an error naming ``objective`` when there are
    none or they do not fit the samples."""
    orders = extras.get(ORDER_KEY)
    if orders is None:
        raise AnyorderError(f"objective {objective!r} does not record generation orders (its samples have no "
                            f"extras[{ORDER_KEY!r}]); use a run of an any-order objective such as ardm")
    if tuple(orders.shape) != tuple(tokens.shape):
        raise AnyorderError(f"objective {objective!r} recorded orders of shape {tuple(orders.shape)} for samples of "
                            f"shape {tuple(tokens.shape)}; they must match")
    return orders.long()


def orders_run(run_dir: str | Path, *, num: int = 64, out: str | Path | None = None, which: str = "last",
               overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Draw ``num`` samples of the run with their generation orders into ``out`` (default ``RUN/orders``):
    ``orders.npz``, ``samples.txt``, the dataset's pictures (``samples-*.png``) and the protocol ``orders.json``,
    which is returned. An :class:`~anyorder.errors.AnyorderError` when the objective records no orders."""
    from anyorder.build import restore_run
    from anyorder.objective import mix_seed

    if num < 1:
        raise ConfigError(f"--num must be at least 1 (got {num})")
    restored = restore_run(run_dir, which=which, overrides=overrides)
    cfg, model, data = restored.cfg, restored.module, restored.datamodule
    data.setup()
    model.eval()
    if torch.cuda.is_available() and str(cfg.trainer.accelerator) not in ("cpu",):
        model.cuda()  # one device is enough for a few dozen samples
    ema = model.ema is not None and bool(cfg.sample.use_ema)
    if model.ema is not None and ema:
        model.ema.swap_in(model)  # the weights `anyorder sample` draws with
    seed = mix_seed(int(cfg.seed), SEED_STREAM)
    with torch.no_grad():
        samples = model.draw(num, seed=seed)
    tokens = samples.tokens.long().cpu()
    orders = check_orders(str(cfg.objective.name), samples.extras, tokens).cpu()
    lengths = samples.lengths.long().cpu()

    out_dir = Path(out) if out is not None else restored.run_dir / "orders"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_orders(out_dir / "orders.npz", tokens, orders, lengths)
    write_text(out_dir / "samples.txt", "".join(
        data.to_text(data.decode(row, int(n))).replace("\n", "\\n") + "\n" for row, n in zip(tokens, lengths, strict=True)))
    stem = out_dir / "samples"
    pictures = [Path(p) for p in data.render_orders(tokens, orders, stem)]
    protocol = {
        "run": str(restored.run_dir),
        "checkpoint": str(restored.checkpoint.relative_to(restored.run_dir)),
        "step": restored.step,
        "objective": str(cfg.objective.name),
        "dataset": str(cfg.data.name),
        "ema_weights": ema,
        "seed": seed,
        "seeding": f"one generator seeded by mix_seed(run seed {int(cfg.seed)}, {SEED_STREAM:#x}) for all samples",
        "settings": dict(cfg.sample),
        "num": int(tokens.shape[0]),
        "num_variables": int(tokens.shape[1]),
        "order_meaning": "orders[b, d] = the step (0..D-1) at which variable d of sample b was generated",
        "mean_step": orders.double().mean(dim=0).tolist(),
        "files": {"orders": "orders.npz", "samples": "samples.txt"},
        "pictures": [str(p) for p in pictures],
    }
    write_json(out_dir / "orders.json", protocol)
    log_pictures(cfg, restored.run_dir, restored.step, picture_keys("orders", stem, pictures))
    protocol["out"] = str(out_dir)
    return protocol
