"""The base DataModule of the molecule datasets: canonicalize, fit a codec, encode, count what is skipped, cache.

A dataset subclasses :class:`MoleculeDataModule` and implements :meth:`~MoleculeDataModule.load_smiles` (the raw
SMILES of each split, fetched with :func:`anyorder.downloads.fetch`) and :meth:`~MoleculeDataModule.source_checksums`.
:meth:`~MoleculeDataModule.build` then

1. carves the validation split out of the training split (``val_fraction``, seeded by ``split_seed``) unless the
   dataset returns its own ``val`` split;
2. parses every SMILES with RDKit and canonicalizes it (:func:`anyorder_plugins.molecules.chem.canonical_smiles`);
3. fits the codec:

   * graph: the atom types (elements, or (element, charge) pairs) are collected over **all** splits, so a test
     molecule never meets an unknown type (the types are an alphabet, not a statistic of the training data); ``N`` is
     ``max_atoms`` or, when 0, the largest molecule over all splits;
   * smiles: the token vocabulary is fitted on the **training** split only; the length is ``smiles_max_len`` or,
     when 0, the longest canonical SMILES over all splits; validation/test molecules with a token the training split
     lacks are skipped and counted (``unknown_token``);

4. encodes every molecule; a molecule that cannot be parsed or represented is **skipped and counted** per split and
   reason (``unparsable``, ``too_many_atoms``, ``too_long``, ``unknown_token``, ``unrepresentable``), never a crash;
5. caches the encoded tensors under ``default_cache_dir()/molecules`` in a file whose name holds a hash of every
   option, the source checksums, the codec source and format versions and the RDKit version; it is written
   atomically and read back with ``torch.load(weights_only=True)`` (no pickle of arbitrary objects); values are
   stored as uint8 when the vocabularies allow and served as int64.

Parsing and encoding run in worker processes (fork; up to 4, one per available core) for inputs of at least
:data:`PARALLEL_MIN` molecules; every molecule is processed on its own, so the result does not depend on the number
of workers. With ``randomize_smiles`` the training loader is a :class:`RandomSmilesLoader`.

The counts, sizes and split convention are in ``splits.info`` and :meth:`~MoleculeDataModule.protocol`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase
from torch import Tensor

from anyorder.atomic import write_with
from anyorder.data import DataSpace, DiscreteDataModule, ShardedLoader, Splits, TokenSet
from anyorder.downloads import default_cache_dir
from anyorder.errors import DataError
from anyorder_plugins.molecules import chem, codecs
from anyorder_plugins.molecules.options import MoleculeConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the cache file layout and of the preprocessing steps here; bump it when either changes."""

ORDER_PICTURE_MOLECULES = 16
"""Valid samples drawn with their generation steps by :meth:`MoleculeDataModule.render_orders`."""

SPLITS = ("train", "val", "test")
SKIP_REASONS = ("unparsable", "too_many_atoms", "too_long", "unknown_token", "unrepresentable")


def cache_root() -> Path:
    """Where preprocessed molecule datasets are cached: ``anyorder.downloads.default_cache_dir() / "molecules"``."""
    return default_cache_dir() / "molecules"


def codec_version() -> str:
    """A digest of the codec and chemistry sources (and any version constant they declare): a change re-encodes."""
    digest = hashlib.sha256()
    for module in (codecs, chem):
        digest.update(str(getattr(module, "FORMAT_VERSION", getattr(module, "VERSION", ""))).encode())
        path = getattr(module, "__file__", None)
        if path:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def carve(n: int, fraction: float, seed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (kept, held out) with ``round(fraction * n)`` held out, chosen by ``seed``; both sorted."""
    held = round(fraction * n)
    perm = np.random.default_rng(list(seed)).permutation(n)
    return np.sort(perm[held:]), np.sort(perm[:held])


class MoleculeDataModule(DiscreteDataModule):
    """Molecules as graphs (node + upper-triangle edge variables) or canonical SMILES token sequences.

    ``decode`` gives a ``Chem.Mol | None`` (graph; not sanitized) or a SMILES string (smiles); ``to_text`` a SMILES
    string for both. ``reference_smiles(split)`` and ``protocol()`` are what the molecule metrics use.
    """

    Config = MoleculeConfig
    config: MoleculeConfig

    def __init__(self, config: MoleculeConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._codec: Any = None
        self._reference: dict[str, list[str]] = {}
        self.cache_hit: bool | None = None
        """After :meth:`build`: True when the splits came from the cache."""
        self.build_seconds: float | None = None
        """After :meth:`build`: seconds it took (preprocessing, or reading the cache)."""

    # -- to implement ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:  # type: ignore[override]  # LightningDataModule declares a settable `name`; ours is fixed
        """The dataset's name (its entry-point name)."""
        return type(self.config).dataset_name

    def load_smiles(self) -> dict[str, list[str]]:
        """The raw SMILES of ``train`` and ``test`` (and ``val`` when the dataset defines it), fetching files as needed."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_smiles()")

    def source_checksums(self) -> dict[str, str]:
        """``{file name: sha256}`` of every source file, known without reading large files (part of the cache key)."""
        raise NotImplementedError(f"{type(self).__name__} must implement source_checksums()")

    def protocol_extra(self) -> dict[str, Any]:
        """Dataset-specific protocol entries (e.g. the split convention)."""
        return {}

    # -- cache ------------------------------------------------------------------------------------------------------
    def cache_key(self) -> str:
        """The sha256 of every option, the source checksums, the codec/format versions and the RDKit version."""
        payload = {
            "format": FORMAT_VERSION,
            "dataset": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "options": dataclasses.asdict(self.config),
            "sources": self.source_checksums(),
            "codec": codec_version(),
            "rdkit": rdBase.rdkitVersion,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def cache_path(self) -> Path:
        """The cache file of the current options."""
        return cache_root() / f"{self.name}-{self.config.representation}-{self.cache_key()[:24]}.pt"

    def _load_cache(self, path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt, not trusted
            log.warning("cannot read the molecule cache %s (%s); rebuilding it", path, exc)
            return None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            return None
        return payload

    # -- build ------------------------------------------------------------------------------------------------------
    def build(self) -> Splits:
        start = time.perf_counter()
        path = self.cache_path()
        payload = self._load_cache(path)
        self.cache_hit = payload is not None
        if payload is None:
            payload = self._preprocess()
            payload["cache_key"] = self.cache_key()
            write_with(path, lambda f: torch.save(payload, f))
            log.info("%s: preprocessed in %.1f s; cached at %s", self.name, time.perf_counter() - start, path)
        self._codec = self._codec_from_state(payload["codec"])
        self._reference = {k: list(v) for k, v in payload["reference"].items()}
        space = DataSpace.from_dict(payload["space"])
        sets = {s: TokenSet(payload["splits"][s]["tokens"].long(), payload["splits"][s]["lengths"].long())
                for s in SPLITS}
        info = dict(payload["info"])
        info["cache_file"] = str(path)
        info["smiles"] = {s: list(payload["splits"][s]["smiles"]) for s in SPLITS}
        self.build_seconds = time.perf_counter() - start
        return Splits(sets["train"], sets["val"], sets["test"], space, info)

    def _codec_from_state(self, state: dict[str, Any]) -> Any:
        cls = codecs.GraphCodec if self.config.representation == "graph" else codecs.SmilesCodec
        return cls.from_state(state)

    def _raw_splits(self) -> tuple[dict[str, list[str]], bool]:
        raw = self.load_smiles()
        missing = {"train", "test"} - raw.keys()
        if missing:
            raise DataError(f"{self.name}: load_smiles() returned no {sorted(missing)} split")
        if "val" in raw:
            return {s: list(raw[s]) for s in SPLITS}, False
        keep, held = carve(len(raw["train"]), self.config.val_fraction, (self.config.split_seed, 0))
        train = raw["train"]
        return {"train": [train[i] for i in keep], "val": [train[i] for i in held], "test": list(raw["test"])}, True

    def _preprocess(self) -> dict[str, Any]:
        c = self.config
        raw, carved = self._raw_splits()
        skipped: dict[str, dict[str, int]] = {s: dict.fromkeys(SKIP_REASONS, 0) for s in SPLITS}
        # parsed[split] = (canonical SMILES, heavy atoms) of every parsable molecule, in the split's order
        parsed: dict[str, list[tuple[str, int]]] = {}
        for split, items in zip(SPLITS, per_split(canonicalize_chunk, [raw[s] for s in SPLITS]), strict=True):
            parsed[split] = [item for item in items if item is not None]
            skipped[split]["unparsable"] += len(items) - len(parsed[split])
        if not parsed["train"]:
            raise DataError(f"{self.name}: no molecule of the training split could be parsed")
        tokens = {s: [codecs.tokenize_smiles(can) for can, _ in parsed[s]] for s in SPLITS}

        if c.representation == "graph":
            codec, candidates, effective = self._fit_graph(parsed, tokens, skipped)
        else:
            codec, candidates, effective = self._fit_smiles(parsed, tokens, skipped)

        kind, state = c.representation, codec.state()
        d = codec.space().num_variables
        splits_out: dict[str, dict[str, Any]] = {}
        encoded = per_split(partial(encode_chunk, kind, state), [candidates[s] for s in SPLITS])
        for split, out in zip(SPLITS, encoded, strict=True):
            cans = candidates[split]
            ok = [x is not None for x in out]
            skipped[split]["unrepresentable"] += ok.count(False)
            values = [x[0] for x in out if x is not None]
            # Stored as uint8 when the vocabularies allow (8x smaller cache); build() widens to int64.
            tokens_t = torch.from_numpy(np.stack(values) if values else np.zeros((0, d), dtype=token_dtype(codec)))
            lengths = torch.tensor([x[1] for x in out if x is not None], dtype=torch.long).reshape(-1)
            splits_out[split] = {"tokens": tokens_t, "lengths": lengths,
                                 "smiles": [can for can, good in zip(cans, ok, strict=True) if good]}
        reference = {s: [can for can, _ in parsed[s]] for s in SPLITS}
        info = {
            "dataset": self.name,
            "representation": c.representation,
            "atom_types": c.atom_types if c.representation == "graph" else None,
            **effective,
            "val_carved_from_train": carved,
            "val_fraction": c.val_fraction,
            "split_seed": c.split_seed,
            "source_sizes": {s: len(raw[s]) for s in SPLITS},
            "sizes": {s: len(splits_out[s]["smiles"]) for s in SPLITS},
            "skipped": skipped,
            "skipped_total": {s: sum(skipped[s].values()) for s in SPLITS},
            "sources": self.source_checksums(),
            "rdkit_version": rdBase.rdkitVersion,
            "format_version": FORMAT_VERSION,
            "codec_version": codec_version(),
            **self.protocol_extra(),
        }
        for split in SPLITS:
            if info["skipped_total"][split]:
                log.warning("%s: skipped %d %s molecules: %s", self.name, info["skipped_total"][split], split,
                            {k: v for k, v in skipped[split].items() if v})
        return {"format": FORMAT_VERSION, "space": codec.space().to_dict(), "codec": state,
                "splits": splits_out, "reference": reference, "info": info}

    def _fit_graph(
        self, parsed: dict[str, list[tuple[str, int]]], tokens: dict[str, list[list[str]]],
        skipped: dict[str, dict[str, int]],
    ) -> tuple[Any, dict[str, list[str]], dict[str, Any]]:
        c = self.config
        largest = max((n for rows_ in parsed.values() for _, n in rows_), default=1)
        max_atoms = c.max_atoms or largest
        # Atom types over ALL splits (see the module doc). GraphCodec.fit uses only the union of the (element, charge)
        # pairs of the molecules within max_atoms, and each atom token of a canonical SMILES fixes its atom's
        # (element, charge): one molecule per distinct token set gives the same codec, for far less work.
        fit_smiles: dict[frozenset[str], str] = {}
        for split in SPLITS:
            for (can, n), toks in zip(parsed[split], tokens[split], strict=True):
                if n <= max_atoms:
                    fit_smiles.setdefault(frozenset(toks), can)
        if not fit_smiles:
            raise DataError(f"{self.name}: no molecule has at most max_atoms={max_atoms} atoms")
        codec = codecs.GraphCodec.fit(list(fit_smiles.values()), max_atoms, c.atom_types == "element_charge")
        candidates = {}
        for split in SPLITS:
            candidates[split] = [can for can, n in parsed[split] if n <= max_atoms]
            skipped[split]["too_many_atoms"] += len(parsed[split]) - len(candidates[split])
        return codec, candidates, {"max_atoms": max_atoms, "largest_molecule": largest}

    def _fit_smiles(
        self, parsed: dict[str, list[tuple[str, int]]], tokens: dict[str, list[list[str]]],
        skipped: dict[str, dict[str, int]],
    ) -> tuple[Any, dict[str, list[str]], dict[str, Any]]:
        c = self.config
        longest = max((len(t) for rows_ in tokens.values() for t in rows_), default=1)
        max_len = c.smiles_max_len or longest  # no EOS position: the objective adds its own
        # SmilesCodec.fit takes the union of the tokens of the canonical SMILES: one molecule per new token suffices.
        seen: set[str] = set()
        fit_smiles = []
        for (can, _), toks in zip(parsed["train"], tokens["train"], strict=True):
            if not seen.issuperset(toks):
                seen.update(toks)
                fit_smiles.append(can)
        codec = codecs.SmilesCodec.fit(fit_smiles, max_len)
        vocab = set(codec.space().token_names or ())
        candidates = {}
        for split in SPLITS:
            keep = []
            for (can, _), toks in zip(parsed[split], tokens[split], strict=True):
                if len(toks) > max_len:
                    skipped[split]["too_long"] += 1
                elif not vocab.issuperset(toks):
                    skipped[split]["unknown_token"] += 1
                else:
                    keep.append(can)
            candidates[split] = keep
        return codec, candidates, {"smiles_max_len": max_len, "longest_smiles_tokens": longest}

    def prepare_data(self) -> None:
        """Fetch the files and preprocess on rank 0, so that the other ranks read the cache instead of repeating it."""
        super().prepare_data()
        self.setup()

    # -- loaders --------------------------------------------------------------------------------------------------
    def loader(self, split: str, global_batch_size: int, *, train: bool) -> ShardedLoader:
        """The base loader; with ``randomize_smiles`` the training loader draws a random SMILES per example."""
        if not (train and self.config.randomize_smiles):
            return super().loader(split, global_batch_size, train=train)
        rank, world, _ = self.world()
        return RandomSmilesLoader(
            getattr(self.splits, split), self.per_device_batch_size(global_batch_size, train=train),
            smiles=self.splits.info["smiles"][split], codec=self.codec,
            shuffle=True, seed=self.seed, rank=rank, world_size=world,
        )

    # -- domain objects ---------------------------------------------------------------------------------------------
    @property
    def codec(self) -> Any:
        """The fitted :class:`~anyorder_plugins.molecules.codecs.GraphCodec` or ``SmilesCodec``."""
        if self._codec is None:
            self.setup()
        return self._codec

    def decode(self, tokens: Tensor, length: int) -> Any:
        """A ``Chem.Mol | None`` (graph; not sanitized, validity is for the metrics) or a SMILES string (smiles)."""
        values = tokens.detach().cpu().numpy().astype(np.int64)
        if self.config.representation == "graph":
            return self.codec.decode(values)
        return self.codec.decode(values, int(length))

    def to_text(self, obj: Any) -> str:
        """A SMILES string: of the (unsanitized) Mol for graphs, "" for None, the string itself for SMILES."""
        if obj is None:
            return ""
        if isinstance(obj, str):
            return obj
        try:
            return str(Chem.MolToSmiles(obj))
        except Exception:  # noqa: BLE001 - RDKit raises on some unsanitizable graphs; shown as empty, counted invalid
            return ""

    def parse_text(self, text: str) -> Any:
        """A line of a samples file: its SMILES (the metrics parse it; an empty line is an invalid sample)."""
        return text.strip()

    def default_metrics(self) -> list[dict[str, Any]]:
        """The molecule suite: validity (also corrected, for graphs), uniqueness, novelty, FCD, NSPDK, SAS/QED and
        the atom- and bond-type distributions."""
        return [
            {"name": "mol_validity", "corrected": self.config.representation == "graph"},
            {"name": "mol_uniqueness"},
            {"name": "mol_novelty"},
            {"name": "fcd"},
            {"name": "nspdk"},
            {"name": "mol_properties"},
            {"name": "mol_type_distributions"},
        ]

    def render(self, objs: Sequence[Any], path: Path) -> bool:
        """A grid of the samples that RDKit can draw (up to 48), under their SMILES, as a PNG at ``path``."""
        from rdkit.Chem import Draw

        mols = [m for m in (chem.to_mol(o) for o in objs) if m is not None and m.GetNumAtoms() > 0][:48]
        if not mols:
            return False
        image = Draw.MolsToGridImage(mols, molsPerRow=8, subImgSize=(200, 200),
                                     legends=[Chem.MolToSmiles(m) for m in mols])
        write_with(path, lambda f: image.save(f, format="PNG"))
        return True

    def render_orders(self, tokens: Tensor, orders: Tensor, path: Path) -> list[Path]:
        """``<path>-orders.png``: up to :data:`ORDER_PICTURE_MOLECULES` valid samples, each atom and each bond
        labelled with the step at which its node or edge variable was generated (graph representation).

        With ``representation: smiles`` there is no picture (``[]``): the order is over the characters of a SMILES
        string, which do not map one to one onto the atoms and bonds of the drawing (ring digits, branches, bond
        symbols and implicit single bonds are characters, or none)."""
        if self.config.representation != "graph":
            return []
        from rdkit.Chem import Draw

        mols, legends = [], []
        for i, (values, order) in enumerate(zip(tokens.cpu().numpy(), orders.cpu().numpy(), strict=True)):
            mol = generation_step_notes(self.codec, values, order)
            if mol is not None:
                mols.append(mol)
                legends.append(f"sample {i}: {Chem.MolToSmiles(mol)}")
            if len(mols) == ORDER_PICTURE_MOLECULES:
                break
        if not mols:
            return []
        image = Draw.MolsToGridImage(mols, molsPerRow=4, subImgSize=(320, 320), legends=legends)
        out = Path(path).with_name(Path(path).name + "-orders.png")
        write_with(out, lambda f: image.save(f, format="PNG"))
        return [out]

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """SMILES strings or Mols as a :class:`TokenSet`; a molecule the codec cannot represent is a DataError."""
        rdBase.DisableLog("rdApp.*")
        rows, lengths = [], []
        for i, obj in enumerate(objs):
            can = chem.canonical_smiles(obj)
            out = None
            if can:
                out = self.codec.encode(can)
                if out is not None and self.config.representation == "graph":
                    out = (out, self.space.num_variables)
            if out is None:
                raise DataError(f"{self.name}: molecule {i} ({obj!r}) cannot be represented by this dataset's codec")
            rows.append(np.asarray(out[0], dtype=np.int64))
            lengths.append(int(out[1]))
        d = self.space.num_variables
        tokens = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, d, dtype=torch.long)
        return TokenSet(tokens, torch.tensor(lengths, dtype=torch.long).reshape(-1))

    def reference_smiles(self, split: str, *, isomeric: bool = True) -> list[str]:
        """Canonical SMILES of every parsable molecule of a split (also those the codec could not represent).

        ``isomeric=False`` drops stereochemistry (recomputed on each call): the graph codec carries no stereo, so
        novelty of graph samples against a set with stereo centres (ZINC250k, MOSES) should use it.

        ``train`` is the dataset's training split as published, i.e. the ``fit`` examples plus the validation
        examples carved from it (novelty is measured against it, as in the literature); ``fit`` is only the
        training examples; ``val`` and ``test`` are those splits. mol_embedded has no published split: there
        ``train`` is its training part alone.
        """
        if not isomeric:
            out = (chem.canonical_smiles(x, isomeric=False) for x in self.reference_smiles(split))
            return [x for x in out if x is not None]
        self.splits  # noqa: B018 - builds (or loads) the splits and the references
        if split == "fit":
            return list(self._reference["train"])
        if split == "train":
            carved = bool(self.splits.info.get("val_carved_from_train"))
            return list(self._reference["train"]) + (list(self._reference["val"]) if carved else [])
        if split not in SPLITS:
            raise DataError(f"{self.name}: reference_smiles split must be train, fit, val or test (got {split!r})")
        return list(self._reference[split])

    def protocol(self) -> dict[str, Any]:
        """What a result on this data must be reported with: dataset, split convention, sizes, skipped counts, ..."""
        info = self.splits.info
        return {k: v for k, v in info.items() if k not in ("smiles", "cache_file")}


class RandomSmilesLoader(ShardedLoader):
    """A training :class:`ShardedLoader` that replaces each example by a random SMILES of the same molecule.

    The random SMILES of example i in epoch e is drawn with ``numpy.random.default_rng([seed, e, i])``, so it does
    not depend on the batch, rank or world size, and a resumed run sees the same strings. When the random SMILES does
    not fit (longer than ``max_len``, or a token the vocabulary lacks, e.g. a ``%10`` ring closure) the example keeps
    its canonical encoding; ``fallbacks`` counts how often that happened.
    """

    def __init__(self, data: TokenSet, batch_size: int, *, smiles: Sequence[str], codec: Any, **kwargs: Any) -> None:
        super().__init__(data, batch_size, **kwargs)
        if len(smiles) != len(data):
            raise DataError(f"{len(smiles)} SMILES for {len(data)} examples")
        self.smiles, self.codec = smiles, codec
        self.fallbacks = 0

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for batch in super().__iter__():
            yield self.randomize(batch)

    def randomize(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``batch`` with its tokens and lengths replaced by those of random SMILES (of the current epoch)."""
        tokens, lengths = batch["tokens"].clone(), batch["lengths"].clone()
        for row, i in enumerate(batch["index"].tolist()):
            out = self.codec.encode(self.smiles[i], randomize=True, rng=np.random.default_rng([self.seed, self.epoch, i]))
            if out is None:
                self.fallbacks += 1
                continue
            tokens[row] = torch.from_numpy(np.asarray(out[0], dtype=np.int64))
            lengths[row] = int(out[1])
        return {**batch, "tokens": tokens, "lengths": lengths}


PARALLEL_MIN = 10_000
"""Inputs at least this long are processed by worker processes (one per available core, at most 4)."""
_CHUNK = 4096


def edge_variable(i: int, j: int, max_atoms: int) -> int:
    """The index among the D variables of the graph codec's edge variable between node slots ``i != j``: the
    ``max_atoms`` node variables come first, then the upper triangle (i < j) in row-major order."""
    i, j = min(i, j), max(i, j)
    return max_atoms + i * (2 * max_atoms - i - 1) // 2 + (j - i - 1)


def generation_step_notes(codec: codecs.GraphCodec, values: np.ndarray, order: np.ndarray) -> Chem.Mol | None:
    """The sanitized molecule of the graph variables ``values`` [D] with each atom's ``atomNote`` and each bond's
    ``bondNote`` set to the generation step (``order`` [D]) of its node or edge variable; None when it is invalid.

    ``GraphCodec.decode`` makes atom k of the node slot of the k-th nonzero node variable (slots in increasing order,
    "no atom" slots skipped), so atom k is slot ``present[k]``; a bond between atoms a and b is the edge variable of
    slots ``present[a]`` and ``present[b]``. Sanitizing keeps atom and bond indices.
    """
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    n = codec.max_atoms
    mol = chem.to_mol(codec.decode(values)) if values.shape[0] == codec.num_variables else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    present = np.flatnonzero(values[:n])
    for atom in mol.GetAtoms():
        atom.SetProp("atomNote", str(int(order[present[atom.GetIdx()]])))
    for bond in mol.GetBonds():
        slot_a, slot_b = int(present[bond.GetBeginAtomIdx()]), int(present[bond.GetEndAtomIdx()])
        bond.SetProp("bondNote", str(int(order[edge_variable(slot_a, slot_b, n)])))
    return mol


def canonicalize_chunk(smiles: Sequence[str]) -> list[tuple[str, int] | None]:
    """(canonical SMILES, heavy atoms) of each SMILES, or None when RDKit cannot parse it (or it has no atom).

    The parsed Mol is sanitized already, so ``Chem.MolToSmiles`` of it is :func:`chem.canonical_smiles` of the input.
    """
    rdBase.DisableLog("rdApp.*")
    out: list[tuple[str, int] | None] = []
    for smi in smiles:
        smi = smi.strip()
        mol = Chem.MolFromSmiles(smi) if smi else None
        out.append((Chem.MolToSmiles(mol), mol.GetNumAtoms()) if mol is not None and mol.GetNumAtoms() else None)
    return out


def encode_chunk(kind: str, state: dict[str, Any], smiles: Sequence[str]) -> list[tuple[np.ndarray, int] | None]:
    """``(values, length)`` of each canonical SMILES under the codec ``state`` (None where it cannot be encoded)."""
    rdBase.DisableLog("rdApp.*")
    if kind == "graph":
        graph = codecs.GraphCodec.from_state(state)
        d, dtype = graph.space().num_variables, token_dtype(graph)
        return [None if (x := graph.encode(s)) is None else (np.asarray(x, dtype=dtype), d) for s in smiles]
    seq = codecs.SmilesCodec.from_state(state)
    dtype = token_dtype(seq)
    return [None if (y := seq.encode(s)) is None else (np.asarray(y[0], dtype=dtype), int(y[1])) for s in smiles]


def token_dtype(codec: Any) -> type:
    """The smallest storage type of the codec's values: uint8 when every vocabulary has at most 256 values."""
    return np.uint8 if codec.space().vocab_size <= 256 else np.int64


def _workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def parallel_map(func: Callable[[Sequence[str]], list[Any]], items: Sequence[str]) -> list[Any]:
    """``func`` over chunks of ``items``, concatenated in order; in worker processes (fork) for long inputs.

    The result does not depend on the number of workers: every item is processed on its own, deterministically.
    """
    chunks = [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    workers = _workers()
    if len(items) < PARALLEL_MIN or workers == 1 or "fork" not in mp.get_all_start_methods():
        return [y for chunk in chunks for y in func(chunk)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        return [y for part in pool.map(func, chunks) for y in part]


def per_split(func: Callable[[Sequence[str]], list[Any]], parts: Sequence[Sequence[str]]) -> list[list[Any]]:
    """:func:`parallel_map` over several lists at once (one pool), the results split back per list."""
    out = parallel_map(func, [x for part in parts for x in part])
    bounds = np.cumsum([0] + [len(part) for part in parts]).tolist()
    return [out[bounds[i]:bounds[i + 1]] for i in range(len(parts))]


def read_lines(path: Path, *, skip_header: bool) -> list[str]:
    """The stripped lines of a text file (optionally without its first line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [x.strip() for x in (lines[1:] if skip_header else lines)]


def published_split(n: int, test_ids: Iterable[int], convention: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted 0-based train and test rows of ``n`` molecules from a published list of test ids.

    ``gdss`` reads an id as the row itself; ``moflow`` reads it as row + 1 (ids counted from 1)."""
    offset = 0 if convention == "gdss" else 1
    test = rows((i - offset for i in test_ids), n, f"{what} ({convention})")
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), np.sort(test)


def rows(values: Iterable[int], n: int, what: str) -> np.ndarray:
    """Row indices as an int64 array, checked to lie in ``range(n)``."""
    arr = np.asarray(list(values), dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise DataError(f"{what}: split index out of range [0, {n}) (min {arr.min()}, max {arr.max()})")
    return arr
