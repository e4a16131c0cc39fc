"""Shared helpers of the test suite: tiny run configs and fake plugin distributions."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKOV_CONFIG = REPO / "configs" / "markov" / "mle.yaml"


def tiny_markov(tmp_path: Path, *extra: str, steps: int = 6) -> list[str]:
    """Overrides that shrink the markov MLE config to a run of a few seconds on CPU."""
    return [
        f"output_dir={tmp_path / 'runs'}",
        "logger.name=csv",
        f"train.max_steps={steps}",
        "train.global_batch_size=8",
        "train.val_every_n_steps=3",
        "train.ckpt_every_n_steps=3",
        "train.log_every_n_steps=1",
        "train.test_at_end=false",
        "sample.num_val_samples=2",
        "network.n_layers=1",
        "network.d_model=16",
        "network.n_heads=2",
        "data.length=12",
        "data.num_train=100",
        "data.num_val=20",
        "data.num_test=20",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        *extra,
    ]


def make_distribution(root: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
                      modules: dict[str, str] | None = None) -> None:
    """Write an installed-looking distribution (``*.dist-info`` with entry points) and its modules under ``root``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n")
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for rel, text in (modules or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
