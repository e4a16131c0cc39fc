"""``anyorder compress`` / ``anyorder decompress``: lossless compression with a trained run, for objectives that can.

An objective that can code data losslessly implements ``compress_to(path, tokens, *, fit_tokens, steps, batch_size,
sigma_tries, seed) -> summary`` and ``decompress_from(path) -> tokens`` (the any-order objectives do, with rANS);
the file format, the model check and the checksums are the objective's. This module only moves data between the
dataset's text form (what ``anyorder sample`` writes, one datapoint per line) or a split, and token tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anyorder.atomic import input_file, read_text_input, write_json, write_text
from anyorder.errors import AnyorderError

MODES = ("dataset", "single")


def _restore(run_dir: str | Path, which: str, overrides: list[str] | tuple[str, ...]) -> Any:
    from anyorder.build import restore_run

    restored = restore_run(run_dir, which=which, overrides=overrides)
    model = restored.module
    if not (hasattr(model.objective, "compress_to") and hasattr(model.objective, "decompress_from")):
        raise AnyorderError(f"objective {restored.cfg.objective.name!r} cannot compress data losslessly (it has no "
                            "compress_to/decompress_from); use a run of an any-order objective")
    restored.datamodule.setup()
    model.eval()
    if model.ema is not None and bool(restored.cfg.eval.use_ema):
        model.ema.swap_in(model)  # the weights `anyorder evaluate` reports, so the sizes match its likelihoods
    return restored


def _read_datapoints(datamodule: Any, path: Path) -> torch.Tensor:
    lines = [line for line in read_text_input(path, "input file").splitlines() if line.strip()]
    if not lines:
        raise AnyorderError(f"{path}: no datapoint (one per line, in the dataset's text form)")
    try:
        tokens = datamodule.encode([datamodule.parse_text(line) for line in lines])
    except NotImplementedError as exc:
        raise AnyorderError(f"{path}: dataset {datamodule.name!r} cannot read datapoints from text ({exc}); "
                            "compress a split with --split instead") from exc
    return tokens.tokens


def compress_run(run_dir: str | Path, inp: str | Path | None, out: str | Path, *, split: str | None = None,
                 mode: str = "dataset", steps: int = 0, limit: int = 0, batch_size: int = 256, sigma_tries: int = 5,
                 fit_size: int = 512, which: str = "last", overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Compress the datapoints of ``inp`` (a text file, one per line) or of the dataset split ``split`` into
    ``out``; ``limit`` > 0 keeps only the first ``limit`` of them; ``mode=single`` codes one datapoint (``inp`` must
    hold exactly one). Writes ``<out>.json`` (sizes, settings) and returns it."""
    if mode not in MODES:
        raise AnyorderError(f"--mode must be one of {MODES} (got {mode!r})")
    if (inp is None) == (split is None):
        raise AnyorderError("give either an input file or --split NAME, not both and not neither")
    if limit < 0:
        raise AnyorderError(f"--limit must be 0 (all datapoints) or positive (got {limit})")
    if inp is not None:
        input_file(inp, "input file")  # before the run is loaded
    restored = _restore(run_dir, which, overrides)
    data = restored.datamodule
    tokens = getattr(data.splits, split).tokens if split else _read_datapoints(data, Path(inp))  # type: ignore[arg-type]
    if limit:
        tokens = tokens[:limit]
    if mode == "single" and tokens.shape[0] != 1:
        raise AnyorderError(f"--mode single codes one datapoint; the input has {tokens.shape[0]} (use --mode dataset)")
    fit = data.splits.train.tokens[:fit_size]
    summary = restored.module.objective.compress_to(Path(out), tokens.long(), fit_tokens=fit.long(), steps=steps,
                                                    batch_size=1 if mode == "single" else batch_size,
                                                    sigma_tries=sigma_tries, seed=int(restored.cfg.seed))
    source = (str(inp) if inp else f"split {split}") + (f", first {limit}" if limit else "")
    summary.update({"mode": mode, "source": source, "run": str(restored.run_dir),
                    "checkpoint": str(restored.checkpoint.relative_to(restored.run_dir)), "step": restored.step})
    write_json(f"{out}.json", summary)
    return summary


def decompress_run(run_dir: str | Path, inp: str | Path, out: str | Path, *, which: str = "last",
                   overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Decode the file ``inp`` with the run and write its datapoints to ``out`` in the dataset's text form (one per
    line); returns how many."""
    source = input_file(inp, "compressed file")  # before the run is loaded
    restored = _restore(run_dir, which, overrides)
    tokens = restored.module.objective.decompress_from(source)
    data = restored.datamodule
    d = tokens.shape[1]
    write_text(out, "".join(data.to_text(data.decode(row, d)) + "\n" for row in tokens))
    return int(tokens.shape[0])
