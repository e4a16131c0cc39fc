"""Molecule <-> discrete variables: an atom-level SMILES tokenizer, a graph codec and a SMILES codec.

* :func:`tokenize_smiles` splits a SMILES string into atom-level tokens (``"".join`` of the tokens gives it back).
* :class:`GraphCodec` turns a molecule into N node variables (atom type or "no atom") followed by the N(N-1)/2
  upper-triangle edge variables (no bond / single / double / triple) of its Kekulé graph with implicit hydrogens.
  With ``charges=True`` (exact mode) an atom type is an (element, formal charge) pair and decoding gives back the
  same canonical SMILES (stereochemistry aside: a graph has none); with ``charges=False`` (literature mode, as in
  MoFlow/GDSS) an atom type is the element and formal charges are lost.
* :class:`SmilesCodec` turns a molecule into the token ids of its canonical (or a randomized) RDKit SMILES.

Both codecs serialize to plain types (``state()`` / ``from_state()``) so they can live in checkpoints loaded with
``weights_only=True``.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from rdkit import Chem

from anyorder.data import DataSpace
from anyorder_plugins.molecules.chem import BOND_TYPES, to_mol

# The usual atom-level SMILES regex (bracket atoms, two-letter organic atoms, %nn ring closures, then single
# characters). The final `[\s\S]` catches any other character, so the tokens always join back to the input.
_TOKEN_RE = re.compile(r"\[[^\[\]]*\]|Br|Cl|%\d\d|[\s\S]")
# Only the atom tokens (characters that match nothing here, such as bonds and ring digits, are skipped by findall).
_ATOM_TOKEN_RE = re.compile(r"\[[^\[\]]*\]|Br|Cl|[A-Za-z*]")

_PT = Chem.GetPeriodicTable()
_MAX_CHARGE = 8  # formal charges in [-8, 8] index the type lookup table; anything else cannot be encoded
_NUM_BOND_VALUES = 4  # 0 none, 1 single, 2 double, 3 triple


def tokenize_smiles(s: str) -> list[str]:
    """Atom-level tokens of the SMILES ``s``: bracket atoms (``[nH]``, ``[C@@H]``, ``[NH3+]``), ``Cl``, ``Br``,
    two-digit ring closures (``%10``) and single characters (atoms, bonds, branches, ring digits, ``.``).

    ``"".join(tokenize_smiles(s)) == s`` for every string ``s``.
    """
    return _TOKEN_RE.findall(s)


def _atomic_number(symbol: str) -> int:
    try:
        z = int(_PT.GetAtomicNumber(symbol))
    except Exception as e:
        raise ValueError(f"unknown element symbol {symbol!r}") from e
    if z < 1:
        raise ValueError(f"unknown element symbol {symbol!r}")
    return z


def _prepare(x: str | Chem.Mol) -> Chem.Mol | None:
    """A sanitized copy of ``x`` without stereochemistry, or None when it does not parse or sanitize."""
    mol = to_mol(x)
    if mol is None:
        return None
    # A graph carries no stereo; dropping it here makes the atom order (and so the encoding) independent of it.
    # A SMILES without '@', '/' or '\\' has none, which spares the call in the common case.
    if not isinstance(x, str) or any(c in x for c in "@/\\"):
        Chem.RemoveStereochemistry(mol)
    return mol


def _output_order(mol: Chem.Mol) -> list[int]:
    """The atom order of the SMILES last written for ``mol`` (RDKit stores it as a string like ``"[3,2,0,1,]"``)."""
    text = mol.GetProp("_smilesAtomOutputOrder")
    return [int(i) for i in text[1:-1].split(",") if i]


def _atom_of_token(token: str) -> tuple[int, int] | None:
    """(atomic number, formal charge) of one SMILES atom token, or None for a wildcard or an unreadable token."""
    mol = Chem.MolFromSmiles(token, sanitize=False)
    if mol is None or mol.GetNumAtoms() != 1:
        return None
    atom = mol.GetAtomWithIdx(0)
    if atom.GetAtomicNum() == 0:
        return None
    return atom.GetAtomicNum(), atom.GetFormalCharge()


class GraphCodec:
    """Molecule graph <-> ``N + N(N-1)/2`` integer variables (N = ``max_atoms``).

    Node variable i (i < N) is 0 for "no atom" or ``1 + t`` for atom type t; edge variable ``N + e`` is the bond
    order (0 none, 1 single, 2 double, 3 triple) between atoms i < j, with e running over the upper triangle in
    row-major order ((0,1), (0,2), ..., (0,N-1), (1,2), ...). Atoms occupy nodes 0..n-1 in the output order of the
    canonical SMILES (``_smilesAtomOutputOrder``), and the molecule is kekulized after that renumbering, so every
    molecule has exactly one encoding. Hydrogens are implicit; stereochemistry is dropped.

    Atom types: with ``charges=False`` (literature mode) they are the ``elements`` (a charged atom is encoded as its
    element and decodes neutral). With ``charges=True`` (exact mode) they are the ``atom_types`` (element, formal
    charge) pairs (default: each element with charge 0; :meth:`fit` collects the pairs a dataset uses), and
    ``decode(encode(m))`` sanitizes to the canonical SMILES of ``m`` (without stereo). In exact mode a molecule whose
    canonical SMILES needs a bracket atom (charge, explicit H, isotope, radical) is checked by decoding it, and is
    refused (``encode`` returns None) when the graph does not reproduce it, e.g. for isotopes, radicals or an
    unusual hydrogen count.
    """

    def __init__(
        self,
        elements: Sequence[str],
        max_atoms: int,
        charges: bool,
        atom_types: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        if max_atoms < 1:
            raise ValueError(f"max_atoms must be at least 1 (got {max_atoms})")
        if len(elements) == 0 or len(set(elements)) != len(elements):
            raise ValueError(f"elements must be a non-empty list of distinct symbols (got {list(elements)})")
        self.elements: tuple[str, ...] = tuple(elements)
        self.max_atoms = int(max_atoms)
        self.charges = bool(charges)
        if atom_types is None:
            types = [(e, 0) for e in self.elements]
        elif not self.charges:
            raise ValueError("atom_types are (element, charge) pairs of exact mode; pass charges=True")
        else:
            types = [(str(e), int(c)) for e, c in atom_types]
        if len(set(types)) != len(types):
            raise ValueError(f"atom_types must be distinct (got {types})")
        for e, c in types:
            if e not in self.elements:
                raise ValueError(f"atom type {(e, c)} uses an element that is not in elements {list(self.elements)}")
            if abs(c) > _MAX_CHARGE:
                raise ValueError(f"atom type {(e, c)}: formal charges must lie in [-{_MAX_CHARGE}, {_MAX_CHARGE}]")
        self.atom_types: tuple[tuple[str, int], ...] = tuple(types)

        n = self.max_atoms
        self.num_edges = n * (n - 1) // 2
        self.num_variables = n + self.num_edges
        # Per type value (1-based; row 0 = "no atom"): atomic number and formal charge, for decoding.
        self._type_z = np.array([0] + [_atomic_number(e) for e, _ in types], dtype=np.int64)
        self._type_charge = np.array([0] + [c for _, c in types], dtype=np.int64)
        # Lookup table (atomic number, charge + _MAX_CHARGE) -> type value, 0 = not representable. In literature
        # mode every charge of an element maps to the element's type.
        self._lookup = np.zeros((119, 2 * _MAX_CHARGE + 1), dtype=np.int64)
        for t, (e, c) in enumerate(types, start=1):
            if self.charges:
                self._lookup[_atomic_number(e), c + _MAX_CHARGE] = t
            else:
                self._lookup[_atomic_number(e), :] = t
        # Upper-triangle pairs in row-major order, and for each molecule size k the positions of its k x k upper
        # triangle inside the flattened k x k adjacency matrix and inside the edge variables (vectorized encoding).
        self._rows, self._cols = np.triu_indices(n, k=1)
        edge_index = np.zeros((n, n), dtype=np.int64)
        edge_index[self._rows, self._cols] = np.arange(self.num_edges)
        # SMILES atom token -> type value (0 = not representable), filled as tokens are met.
        self._token_types: dict[str, int] = {}
        self._by_size: list[tuple[np.ndarray, np.ndarray]] = []
        for k in range(n + 1):
            rows_k, cols_k = np.triu_indices(k, k=1)
            self._by_size.append((rows_k * k + cols_k, n + edge_index[rows_k, cols_k]))

    # ---------------------------------------------------------------------------------------------------- building
    @classmethod
    def fit(cls, smiles_iterable: Iterable[str | Chem.Mol], max_atoms: int, charges: bool) -> GraphCodec:
        """A codec whose types are those seen in the molecules of at most ``max_atoms`` atoms of ``smiles_iterable``.

        Elements are sorted by atomic number; exact-mode types by (atomic number, |charge|, charge), so the neutral
        type of an element comes first. Unparsable molecules and larger ones are skipped.
        """
        seen: set[tuple[int, int]] = set()
        token_atoms: dict[str, tuple[int, int] | None] = {}
        for x in smiles_iterable:
            mol = to_mol(x)
            n = mol.GetNumAtoms() if mol is not None else 0
            if mol is None or n > max_atoms:
                continue
            if isinstance(x, str):
                # The atom tokens of the input name the atoms' (element, charge) as well, at a cached dict lookup
                # each; they are used when they match the parsed atoms one to one (RDKit may drop [H] atoms).
                tokens = _ATOM_TOKEN_RE.findall(x)
                if len(tokens) == n:
                    for t in tokens:
                        if t not in token_atoms:
                            token_atoms[t] = _atom_of_token(t)
                    atoms = [token_atoms[t] for t in tokens]
                    if all(a is not None for a in atoms):
                        seen.update(a for a in atoms if a is not None)
                        continue
            seen.update((a.GetAtomicNum(), a.GetFormalCharge()) for a in mol.GetAtoms())
        if not seen:
            raise ValueError("GraphCodec.fit: no molecule could be parsed within max_atoms")
        zs = sorted({z for z, _ in seen})
        elements = [_PT.GetElementSymbol(z) for z in zs]
        if not charges:
            return cls(elements, max_atoms, False)
        types = sorted(seen, key=lambda zc: (zc[0], abs(zc[1]), zc[1]))
        return cls(elements, max_atoms, True, [(_PT.GetElementSymbol(z), c) for z, c in types])

    def state(self) -> dict[str, Any]:
        """Plain-type description from which :meth:`from_state` rebuilds the same codec."""
        return {
            "elements": list(self.elements),
            "max_atoms": self.max_atoms,
            "charges": self.charges,
            "atom_types": [[e, c] for e, c in self.atom_types] if self.charges else None,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> GraphCodec:
        """Inverse of :meth:`state`."""
        types = d.get("atom_types")
        return cls(
            list(d["elements"]), int(d["max_atoms"]), bool(d["charges"]),
            [(str(e), int(c)) for e, c in types] if types is not None else None,
        )

    @property
    def num_atom_types(self) -> int:
        """Number of atom types (node values are 0 = no atom and 1..num_atom_types)."""
        return len(self.atom_types)

    @property
    def atom_type_names(self) -> list[str]:
        """Display names of node values 1..n: ``"N"``, and in exact mode ``"N+"``, ``"O-"``, ``"C2-"`` ..."""
        if not self.charges:
            return list(self.elements)
        names = []
        for e, c in self.atom_types:
            sign = "+" if c > 0 else "-"
            names.append(e if c == 0 else f"{e}{'' if abs(c) == 1 else abs(c)}{sign}")
        return names

    def space(self) -> DataSpace:
        """The graph :class:`~anyorder.data.DataSpace`: N node variables then N(N-1)/2 edge variables."""
        vocab = (self.num_atom_types + 1,) * self.max_atoms + (_NUM_BOND_VALUES,) * self.num_edges
        return DataSpace("graph", self.num_variables, vocab, shape=(self.max_atoms,))

    # ---------------------------------------------------------------------------------------------------- encoding
    def encode(self, x: str | Chem.Mol) -> np.ndarray | None:
        """The int64 variables [D] of ``x`` (a SMILES or a Mol), or None when it cannot be represented.

        None when: it does not parse/sanitize, has no atom or more than ``max_atoms`` atoms, has an atom type
        (element, or element + charge in exact mode) outside the codec, or a bond that is not single, double or
        triple after kekulization; in exact mode also when the graph does not reproduce its canonical SMILES (see
        the class docstring). Several fragments are fine.
        """
        mol = _prepare(x)
        if mol is None:
            return None
        n = mol.GetNumAtoms()
        if n == 0 or n > self.max_atoms:
            return None
        smiles = Chem.MolToSmiles(mol)  # sets _smilesAtomOutputOrder, the canonical atom order
        # Atom k of the renumbered molecule is the k-th atom token of `smiles`: reading the types from the tokens
        # (a cached dict lookup per token) is several times faster than asking RDKit atom by atom.
        tokens = _ATOM_TOKEN_RE.findall(smiles)
        if len(tokens) != n:
            return None
        cache = self._token_types
        try:
            types = [cache[t] for t in tokens]
        except KeyError:
            types = [self._token_type(t) for t in tokens]
        if 0 in types:
            return None
        mol = Chem.RenumberAtoms(mol, _output_order(mol))
        # Kekulizing after the canonical renumbering makes the Kekulé structure independent of the input atom order.
        Chem.Kekulize(mol, clearAromaticFlags=True)
        values = np.zeros(self.num_variables, dtype=np.int64)
        values[:n] = types
        if n > 1:
            # One C++ call for all bond orders (1.0/2.0/3.0 after kekulization) instead of a Python loop over bonds.
            flat, target = self._by_size[n]
            orders = Chem.GetAdjacencyMatrix(mol, useBO=True).ravel()[flat]
            ints = orders.astype(np.int64)
            # A bond of order 0 (ZERO/other types RDKit counts as 0) or a non-integer order is not representable.
            if np.count_nonzero(ints) != mol.GetNumBonds() or (ints != orders).any() or ints.max() > 3:
                return None
            values[target] = ints
        elif mol.GetNumBonds():
            return None
        # A bracket atom may carry what a graph cannot hold (isotope, radical, an H count its valence does not imply):
        # only then is decoding needed to be sure. Brackets are rare (QM9: 1.4% of molecules), so this is cheap.
        if self.charges and "[" in smiles and self._decoded_smiles(values) != smiles:
            return None
        return values

    def _token_type(self, token: str) -> int:
        """Type value (0 = not representable) of a SMILES atom token, remembered in ``self._token_types``."""
        if token not in self._token_types:
            zq = _atom_of_token(token)
            t = 0
            if zq is not None and zq[0] < self._lookup.shape[0] and abs(zq[1]) <= _MAX_CHARGE:
                t = int(self._lookup[zq[0], zq[1] + _MAX_CHARGE])
            self._token_types[token] = t
        return self._token_types[token]

    def _decoded_smiles(self, values: np.ndarray) -> str | None:
        mol = self.decode(values)
        if mol is None:
            return None
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # noqa: BLE001 - any RDKit sanitization error means "not reproduced"
            return None
        return Chem.MolToSmiles(mol)

    def encode_many(
        self, items: Iterable[str | Chem.Mol], processes: int = 1, chunk_size: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode many molecules: ``(values [M, D] int64, kept [M] int64)``, the encodings of the encodable items and
        their positions in ``items`` (the others are skipped).

        ``processes > 1`` encodes chunks of ``chunk_size`` items in that many worker processes (forked where the
        platform allows it, so the workers start in milliseconds); the result is the same as with one process.
        """
        items = list(items)
        chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
        if processes > 1 and len(chunks) > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            with context.Pool(min(processes, len(chunks))) as pool:
                parts = pool.map(self._encode_chunk, chunks)
        else:
            parts = [self._encode_chunk(c) for c in chunks]
        values = [v for v, _ in parts if len(v)]
        kept = [k + i * chunk_size for i, (_, k) in enumerate(parts) if len(k)]
        if not values:
            return np.zeros((0, self.num_variables), dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(values), np.concatenate(kept)

    def _encode_chunk(self, items: list[str | Chem.Mol]) -> tuple[np.ndarray, np.ndarray]:
        rows: list[np.ndarray] = []
        kept: list[int] = []
        for i, x in enumerate(items):
            v = self.encode(x)
            if v is not None:
                rows.append(v)
                kept.append(i)
        values = np.stack(rows) if rows else np.zeros((0, self.num_variables), dtype=np.int64)
        return values, np.asarray(kept, dtype=np.int64)

    # ---------------------------------------------------------------------------------------------------- decoding
    def decode(self, values: Sequence[int] | np.ndarray) -> Chem.Mol | None:
        """The molecule of the variables ``values`` [D] (a list, numpy array or CPU tensor), NOT sanitized.

        Nodes with value 0 are dropped and the others become atoms 0..n-1 in node order (formal charge from the type
        in exact mode, neutral in literature mode, hydrogens implicit); each nonzero edge between two present nodes
        becomes a bond. An edge that touches an absent node is ignored (as in MoFlow/GDSS, which mask the adjacency
        by the atoms that exist). No sanitization or repair is done, so a chemically invalid graph comes back as an
        invalid Mol (judge it with :func:`~anyorder_plugins.molecules.chem.is_valid`); only the implicit-valence
        cache is computed, non-strictly, so that ``Chem.MolToSmiles`` works on the result.

        Returns None when the graph cannot be built: no atom at all, or a value outside its variable's vocabulary.
        Raises ``ValueError`` when ``values`` does not have D entries.
        """
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        if v.shape[0] != self.num_variables:
            raise ValueError(f"expected {self.num_variables} values, got {v.shape[0]}")
        nodes, edges = v[: self.max_atoms], v[self.max_atoms:]
        if nodes.min() < 0 or nodes.max() > self.num_atom_types or edges.min(initial=0) < 0 \
                or edges.max(initial=0) >= _NUM_BOND_VALUES:
            return None
        present = np.flatnonzero(nodes)
        if present.size == 0:
            return None
        index = np.full(self.max_atoms, -1, dtype=np.int64)
        index[present] = np.arange(present.size)
        rw = Chem.RWMol()
        for t in nodes[present].tolist():
            atom = Chem.Atom(int(self._type_z[t]))
            if self.charges and self._type_charge[t]:
                atom.SetFormalCharge(int(self._type_charge[t]))
            rw.AddAtom(atom)
        bonded = np.flatnonzero(edges)
        a, b = index[self._rows[bonded]], index[self._cols[bonded]]
        keep = (a >= 0) & (b >= 0)
        for i, j, order in zip(a[keep].tolist(), b[keep].tolist(), edges[bonded][keep].tolist(), strict=True):
            rw.AddBond(i, j, BOND_TYPES[order])
        mol = rw.GetMol()
        mol.UpdatePropertyCache(strict=False)
        return mol


class SmilesCodec:
    """Molecule <-> token ids of its SMILES: ``max_len`` positions over the sorted token vocabulary ``vocab``.

    A SMILES of L <= ``max_len`` tokens is encoded as its L token ids followed by zeros (padding; the length says
    where it ends, and the objective adds its own EOS). Canonical RDKit SMILES by default; randomized SMILES (RDKit's
    ``doRandom`` traversal, seeded from a numpy Generator) for augmentation.
    """

    def __init__(self, vocab: Sequence[str], max_len: int) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1 (got {max_len})")
        if len(vocab) == 0 or len(set(vocab)) != len(vocab):
            raise ValueError("vocab must be a non-empty list of distinct tokens")
        self.vocab: tuple[str, ...] = tuple(vocab)
        self.max_len = int(max_len)
        self._index = {t: i for i, t in enumerate(self.vocab)}

    @classmethod
    def fit(cls, smiles_iterable: Iterable[str | Chem.Mol], max_len: int) -> SmilesCodec:
        """A codec whose vocabulary is the sorted set of tokens of the canonical SMILES of ``smiles_iterable``.

        Unparsable molecules are skipped. Tokens of molecules longer than ``max_len`` are included too.
        """
        tokens: set[str] = set()
        for x in smiles_iterable:
            mol = to_mol(x)
            if mol is not None:
                tokens.update(tokenize_smiles(Chem.MolToSmiles(mol)))
        if not tokens:
            raise ValueError("SmilesCodec.fit: no molecule could be parsed")
        return cls(sorted(tokens), max_len)

    def state(self) -> dict[str, Any]:
        """Plain-type description from which :meth:`from_state` rebuilds the same codec."""
        return {"vocab": list(self.vocab), "max_len": self.max_len}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> SmilesCodec:
        """Inverse of :meth:`state`."""
        return cls([str(t) for t in d["vocab"]], int(d["max_len"]))

    def space(self) -> DataSpace:
        """A variable-length sequence of ``max_len`` positions over the token vocabulary."""
        return DataSpace.sequence(self.max_len, len(self.vocab), variable_length=True, token_names=self.vocab)

    def smiles(self, x: str | Chem.Mol, randomize: bool = False, rng: np.random.Generator | None = None) -> str | None:
        """The canonical SMILES of ``x``, or a random one when ``randomize``; None if ``x`` does not parse."""
        mol = to_mol(x)
        if mol is None:
            return None
        if not randomize:
            return Chem.MolToSmiles(mol)
        rng = rng if rng is not None else np.random.default_rng()
        # MolToRandomSmilesVect is RDKit's doRandom traversal with an explicit seed, so augmentation is reproducible.
        seed = int(rng.integers(1, 2**31 - 1))
        return Chem.MolToRandomSmilesVect(mol, 1, randomSeed=seed)[0]

    def encode(
        self, x: str | Chem.Mol, randomize: bool = False, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, int] | None:
        """``(token ids [max_len] int64, length)`` of the canonical (or, with ``randomize``, a random) SMILES of ``x``.

        None when ``x`` does not parse, its SMILES has more than ``max_len`` tokens, or a token is not in the
        vocabulary (a randomized SMILES can need one the canonical ones never use, e.g. a ``%10`` ring closure:
        fall back to the canonical encoding then).
        """
        s = self.smiles(x, randomize, rng)
        if s is None:
            return None
        tokens = tokenize_smiles(s)
        if len(tokens) > self.max_len:
            return None
        out = np.zeros(self.max_len, dtype=np.int64)
        try:
            out[: len(tokens)] = [self._index[t] for t in tokens]
        except KeyError:
            return None
        return out, len(tokens)

    def decode(self, values: Sequence[int] | np.ndarray, length: int) -> str:
        """The string of the first ``length`` token ids (not validated as a molecule).

        Raises ``ValueError`` for an id outside the vocabulary.
        """
        ids = np.asarray(values, dtype=np.int64).reshape(-1)[: int(length)].tolist()
        try:
            if min(ids, default=0) < 0:
                raise IndexError
            return "".join(self.vocab[i] for i in ids)
        except IndexError as e:
            raise ValueError(f"token ids must lie in [0, {len(self.vocab)}), got {ids}") from e
