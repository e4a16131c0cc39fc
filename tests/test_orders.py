"""Pictures of generation orders: the DataModule hook, the image and molecule pictures, and ``anyorder orders``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MARKOV_CONFIG, REPO, tiny_markov

from anyorder.cli import main
from anyorder.data import DiscreteDataModule
from anyorder_plugins.images import orders as pictures

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="the digits come with scikit-learn, which is not installed")


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _digits() -> DiscreteDataModule:
    from anyorder_plugins.images.digits import DigitsDataModule
    from anyorder_plugins.images.digits_config import DigitsConfig

    return DigitsDataModule(DigitsConfig())


def test_the_default_hook_draws_no_picture(tmp_path: Path) -> None:
    dm = DiscreteDataModule(None)
    out = tmp_path / "out"
    out.mkdir()
    assert dm.render_orders(torch.zeros(2, 4, dtype=torch.long), torch.arange(4).repeat(2, 1), out / "s") == []
    assert list(out.iterdir()) == []


def test_colour_map_gets_lighter_from_early_to_late() -> None:
    lum = _luminance(pictures.colour_map(np.linspace(0, 1, 50)).astype(np.float64))
    assert np.all(np.diff(lum) > 0)
    assert pictures.snapshot_steps(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert pictures.snapshot_steps(3) == [1, 2, 3]


def test_digits_heatmap_follows_a_raster_order(tmp_path: Path) -> None:
    from PIL import Image

    dm = _digits()
    d = 64
    tokens = torch.randint(0, 17, (5, d), generator=torch.Generator().manual_seed(0))
    orders = torch.arange(d).repeat(5, 1)  # raster order: pixel d is generated at step d
    files = dm.render_orders(tokens, orders, tmp_path / "final")
    assert files == [tmp_path / "final-orders.png", tmp_path / "final-order-strip.png"]
    heat = np.asarray(Image.open(files[0]).convert("RGB")).astype(np.float64)
    scale = pictures.scale_for(8, pictures.HEATMAP_MIN_PIXELS)
    map_px = 8 * scale
    assert scale * 8 >= pictures.HEATMAP_MIN_PIXELS
    assert heat.shape[1] == pictures.MARGIN * 2 + map_px + pictures.BAR_WIDTH + 4 + pictures.LABEL_WIDTH
    assert heat.shape[0] >= pictures.MARGIN * 2 + map_px
    centres = [heat[pictures.MARGIN + (i // 8) * scale + scale // 2, pictures.MARGIN + (i % 8) * scale + scale // 2]
               for i in range(d)]
    lum = _luminance(np.array(centres))
    assert np.all(np.diff(lum) > 0), "later pixels must be lighter (purple = early, yellow = late)"
    assert tuple(centres[0]) == tuple(pictures.COLOUR_ANCHORS[0])
    assert tuple(centres[-1]) == tuple(pictures.COLOUR_ANCHORS[-1])
    # The colour bar: late (yellow) at the top, early (purple) at the bottom.
    bar_x = pictures.MARGIN + map_px + pictures.MARGIN + pictures.BAR_WIDTH // 2
    assert _luminance(heat[pictures.MARGIN + 1, bar_x]) > _luminance(heat[pictures.MARGIN + map_px - 2, bar_x])
    # A reversed order reverses the map.
    rev = dm.render_orders(tokens, (d - 1) - orders, tmp_path / "rev")
    heat_rev = np.asarray(Image.open(rev[0]).convert("RGB"))
    assert tuple(heat_rev[pictures.MARGIN + 1, pictures.MARGIN + 1]) == tuple(pictures.COLOUR_ANCHORS[-1])


def test_digits_strip_masks_pixels_until_their_step(tmp_path: Path) -> None:
    from PIL import Image

    dm = _digits()
    d = 64
    tokens = torch.full((6, d), 16, dtype=torch.long)  # all white
    tokens[:, 1] = 0  # one black pixel
    orders = torch.arange(d).repeat(6, 1)
    strip = np.asarray(Image.open(dm.render_orders(tokens, orders, tmp_path / "s")[1]).convert("RGB"))
    scale = pictures.scale_for(8, pictures.STRIP_MIN_PIXELS)
    cell = 8 * scale + 1
    top = pictures.MARGIN + pictures.STRIP_HEADER
    assert strip.shape == (top + 4 * cell + 1 + pictures.MARGIN, pictures.MARGIN + 8 * cell + 1 + pictures.MARGIN, 3)

    def pixel(row: int, column: int, index: int) -> tuple[int, ...]:
        y = top + row * cell + 1 + (index // 8) * scale + scale // 2
        x = pictures.MARGIN + column * cell + 1 + (index % 8) * scale + scale // 2
        return tuple(int(v) for v in strip[y, x])

    # Snapshot c shows the first 8 * (c + 1) pixels of the raster order; the rest is in the mask colour.
    for row in range(4):
        assert pixel(row, 0, 0) == (255, 255, 255) and pixel(row, 0, 1) == (0, 0, 0)
        assert pixel(row, 0, 7) == (255, 255, 255) and pixel(row, 0, 8) == pictures.MASK_COLOUR
        assert pixel(row, 2, 23) == (255, 255, 255) and pixel(row, 2, 24) == pictures.MASK_COLOUR
        assert pixel(row, 7, 63) == (255, 255, 255)
    snap = pictures.snapshot(np.full((2, 2), 1), np.array([3, 0, 1, 2]), 2, levels=2)
    assert [tuple(p) for p in snap.reshape(4, 3)] == [pictures.MASK_COLOUR, (255, 255, 255), (255, 255, 255),
                                                      pictures.MASK_COLOUR]


def test_molecule_notes_are_the_steps_of_node_and_edge_variables(tmp_path: Path) -> None:
    from anyorder_plugins.molecules.codecs import GraphCodec
    from anyorder_plugins.molecules.datamodule import edge_variable, generation_step_notes

    codec = GraphCodec(["C", "N", "O"], 4, False)
    assert [edge_variable(i, j, 4) for i, j in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]] == list(range(4, 10))
    assert edge_variable(3, 1, 4) == 8
    # C at slot 0, no atom at slot 1, O at slot 2, N at slot 3; bonds C-O (slots 0,2) and O-N (slots 2,3): C-O-N.
    values = np.zeros(10, dtype=np.int64)
    values[[0, 2, 3]] = [1, 3, 2]
    values[4 + 1] = 1  # edge (0, 2)
    values[4 + 5] = 1  # edge (2, 3)
    order = np.array([7, 9, 2, 0, 8, 5, 6, 1, 4, 3])
    mol = generation_step_notes(codec, values, order)
    assert mol is not None
    atoms = {a.GetSymbol(): int(a.GetProp("atomNote")) for a in mol.GetAtoms()}
    assert atoms == {"C": 7, "O": 2, "N": 0}
    bonds = {frozenset((b.GetBeginAtom().GetSymbol(), b.GetEndAtom().GetSymbol())): int(b.GetProp("bondNote"))
             for b in mol.GetBonds()}
    assert bonds == {frozenset("CO"): 5, frozenset("ON"): 3}
    # An invalid graph (O#O: trivalent oxygens) gives no molecule.
    bad = np.zeros(10, dtype=np.int64)
    bad[[0, 1]] = [3, 3]
    bad[4] = 3  # O#O
    assert generation_step_notes(codec, bad, order) is None


def test_molecule_order_picture_of_an_encoded_molecule(tmp_path: Path) -> None:
    from anyorder_plugins.molecules.codecs import GraphCodec
    from anyorder_plugins.molecules.datamodule import edge_variable, generation_step_notes
    from anyorder_plugins.molecules.embedded import EmbeddedDataModule
    from anyorder_plugins.molecules.embedded_config import EmbeddedConfig

    codec = GraphCodec.fit(["CC(=O)Nc1ccc(O)cc1"], 12, False)
    values = np.asarray(codec.encode("CC(=O)Nc1ccc(O)cc1"))
    order = np.random.default_rng(0).permutation(codec.num_variables)
    mol = generation_step_notes(codec, values, order)
    assert mol is not None and mol.GetNumAtoms() == 11
    for atom in mol.GetAtoms():  # the codec puts the atoms in slots 0..n-1
        assert int(atom.GetProp("atomNote")) == order[atom.GetIdx()]
    for bond in mol.GetBonds():
        assert int(bond.GetProp("bondNote")) == order[edge_variable(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), 12)]
    dm = EmbeddedDataModule(EmbeddedConfig())
    dm._codec = codec  # the codec alone is what the picture needs (no preprocessing of the embedded set)
    tokens = torch.from_numpy(np.stack([values, np.zeros_like(values)]))  # the second sample has no atom: skipped
    files = dm.render_orders(tokens, torch.from_numpy(np.stack([order, order])), tmp_path / "final")
    assert files == [tmp_path / "final-orders.png"] and files[0].stat().st_size > 1000
    smiles = EmbeddedDataModule(EmbeddedConfig(representation="smiles"))
    assert smiles.render_orders(tokens, tokens, tmp_path / "smiles") == []


@pytest.mark.e2e
def test_orders_cli_refuses_an_objective_without_orders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(MARKOV_CONFIG), *tiny_markov(tmp_path, steps=2)]) == 0
    run = next((tmp_path / "runs").iterdir())
    capsys.readouterr()
    assert main(["orders", str(run), "--num", "4"]) == 2
    assert "does not record generation orders" in capsys.readouterr().err
    assert not (run / "orders" / "orders.npz").exists()


@pytest.mark.e2e
def test_orders_cli_on_markov_writes_no_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = Path(MARKOV_CONFIG).parent / "ardm.yaml"
    assert main(["train", str(config), *tiny_markov(tmp_path, steps=2)]) == 0
    run = next((tmp_path / "runs").iterdir())
    capsys.readouterr()
    assert main(["orders", str(run), "--num", "3"]) == 0
    assert "draws no picture" in capsys.readouterr().out
    with np.load(run / "orders" / "orders.npz", allow_pickle=False) as f:
        assert f["tokens"].shape == f["orders"].shape == (3, 12)
        assert all(sorted(row) == list(range(12)) for row in f["orders"].tolist())
    protocol = json.loads((run / "orders" / "orders.json").read_text())
    assert protocol["pictures"] == [] and len(protocol["mean_step"]) == 12 and protocol["num"] == 3


@pytest.mark.e2e
@needs_sklearn
def test_orders_cli_on_a_tiny_digits_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wandb_offline import find_run_files, read_run

    overrides = [
        f"output_dir={tmp_path / 'runs'}", "logger.name=wandb", "train.max_steps=2", "train.global_batch_size=4",
        "train.val_batch_size=4", "train.val_every_n_steps=2", "train.ckpt_every_n_steps=2",
        "train.limit_val_batches=2", "train.test_at_end=false", "sample.num_val_samples=2",
        "sample.num_final_samples=4", "sample.batch_size=4", "network.n_layers=1", "network.d_model=16",
        "network.n_heads=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.precision=32-true", "train.compile=false", "objective.eval_passes=1",
    ]
    assert main(["train", str(REPO / "configs" / "digits" / "ardm.yaml"), *overrides]) == 0
    run = next((tmp_path / "runs").iterdir())
    # Training's final samples keep their orders and pictures beside the sample picture.
    meta = json.loads((run / "samples" / "final.txt.meta.json").read_text())
    assert meta["orders"] == "final.orders.npz" and (run / "samples" / "final.orders.npz").is_file()
    assert [Path(p).name for p in meta["order_pictures"]] == ["final-orders.png", "final-order-strip.png"]
    assert all(Path(p).is_file() for p in meta["order_pictures"])
    capsys.readouterr()
    out = tmp_path / "pictures"
    assert main(["orders", str(run), "--num", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "samples-orders.png" in printed and "samples-order-strip.png" in printed
    with np.load(out / "orders.npz", allow_pickle=False) as f:
        assert f["tokens"].shape == f["orders"].shape == (8, 64) and f["orders"].dtype == np.int64
    protocol = json.loads((out / "orders.json").read_text())
    assert protocol["num"] == 8 and len(protocol["mean_step"]) == 64 and protocol["step"] == 2
    assert [Path(p).name for p in protocol["pictures"]] == ["samples-orders.png", "samples-order-strip.png"]
    assert all(Path(p).is_file() for p in protocol["pictures"])
    assert len((out / "samples.txt").read_text().splitlines()) == 8
    # The same seed draws the same samples.
    assert main(["orders", str(run), "--num", "8", "--out", str(tmp_path / "again")]) == 0
    with np.load(out / "orders.npz") as a, np.load(tmp_path / "again" / "orders.npz") as b:
        assert np.array_equal(a["orders"], b["orders"]) and np.array_equal(a["tokens"], b["tokens"])
    # The pictures went to the run's W&B log.
    keys = {k for f in find_run_files(run) for row in read_run(f).history for k in row}
    assert {"orders/orders", "orders/order-strip", "samples/orders", "samples/order-strip"} <= keys
