"""Small RDKit helpers shared by the molecule codecs, data modules and metrics.

* :func:`canonical_smiles` — RDKit canonical SMILES of a SMILES string or a Mol (None when it cannot be parsed or
  sanitized).
* :func:`kekulized_copy` — a Kekulé copy (explicit single/double bonds, aromatic flags cleared).
* :func:`is_valid` — does RDKit sanitize the molecule as it is.
* :func:`valency_correct` — the MoFlow/GDSS valency correction (lower bond orders at over-valent atoms).
* :func:`largest_fragment` — the fragment with the most atoms.

RDKit's parse and sanitization warnings are silenced on import: invalid samples are expected and counted, not
printed.
"""

from __future__ import annotations

from rdkit import Chem, rdBase

rdBase.DisableLog("rdApp.*")

# Bond order -> RDKit bond type, for the orders the graph codecs use.
BOND_TYPES: dict[int, Chem.BondType] = {
    1: Chem.BondType.SINGLE,
    2: Chem.BondType.DOUBLE,
    3: Chem.BondType.TRIPLE,
}


def _sanitized_copy(mol: Chem.Mol) -> Chem.Mol | None:
    """A sanitized copy of ``mol``, or None when RDKit rejects it (the input is never modified)."""
    copy = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(copy)
    except Exception:  # noqa: BLE001 - RDKit raises several exception types (valence, kekulize, ring info ...)
        return None
    return copy


def to_mol(x: str | Chem.Mol | None) -> Chem.Mol | None:
    """A sanitized molecule from a SMILES string or a Mol (a sanitized copy; the input Mol is not modified).

    Returns None for None, an unparsable SMILES, or a Mol that does not sanitize.
    """
    if x is None:
        return None
    if isinstance(x, str):
        return Chem.MolFromSmiles(x)
    return _sanitized_copy(x)


def canonical_smiles(x: str | Chem.Mol | None, *, isomeric: bool = True) -> str | None:
    """RDKit canonical SMILES of ``x`` (a SMILES string or a Mol), or None if it is None, unparsable or unsanitizable.

    A Mol is sanitized on a copy first, so an unsanitized Kekulé Mol (e.g. a decoded graph) gets the same aromatic
    canonical SMILES as the molecule it encodes. ``isomeric=False`` drops stereochemistry and isotopes (RDKit's
    ``isomericSmiles=False``). An empty molecule gives ``""`` (RDKit's behaviour).
    """
    mol = to_mol(x)
    if mol is None:
        return None
    return Chem.MolToSmiles(mol, isomericSmiles=isomeric)


def kekulized_copy(mol: Chem.Mol) -> Chem.Mol:
    """A copy of ``mol`` in Kekulé form with the aromatic flags cleared (bonds are SINGLE/DOUBLE/TRIPLE only).

    Raises RDKit's ``KekulizeException`` when no Kekulé structure exists (e.g. ``c1cccc1`` parsed unsanitized).
    """
    copy = Chem.Mol(mol)
    Chem.Kekulize(copy, clearAromaticFlags=True)
    return copy


def is_valid(mol: Chem.Mol | None) -> bool:
    """True when RDKit's ``SanitizeMol`` succeeds on a copy of ``mol`` as it is (None is not valid).

    No correction of any kind is attempted: this is "validity without correction".
    """
    return mol is not None and _sanitized_copy(mol) is not None


def _bond_order(bond: Chem.Bond) -> float:
    return bond.GetBondTypeAsDouble()


def valency_correct(mol: Chem.Mol | None) -> Chem.Mol | None:
    """The valency correction of MoFlow (``correct_mol``), also used by GDSS, on a copy of ``mol``.

    Repeat until RDKit finds no atom over its allowed valence:

    1. take the over-valent atom with the lowest index (RDKit reports atoms in index order, and MoFlow parses the
       first one it reports);
    2. among that atom's bonds take the one with the highest order (the first such bond in RDKit's bond order of the
       atom when several tie, as MoFlow's stable descending sort does);
    3. lower its order by one: TRIPLE -> DOUBLE, DOUBLE -> SINGLE, and a SINGLE bond is removed (an AROMATIC bond,
       which the graph codecs never produce, is treated as order 1.5 and becomes SINGLE).

    Formal charges are never changed (GDSS additionally sets +1 charges on N/O/S while it *builds* a molecule; that
    heuristic is not part of this function). The correction can split a molecule into fragments; take
    :func:`largest_fragment` afterwards for the MoFlow/GDSS "with correction" numbers.

    Returns the corrected molecule, sanitized, or None when ``mol`` is None, an over-valent atom has no bond left to
    lower (e.g. a lone atom with an impossible charge), or the result still fails sanitization for another reason
    (e.g. kekulization). A molecule that is valid already comes back unchanged (a sanitized copy).
    """
    if mol is None:
        return None
    rw = Chem.RWMol(mol)
    # A bond takes at most 3 steps to disappear (TRIPLE -> DOUBLE -> SINGLE -> none), so the loop ends by itself.
    for _ in range(3 * rw.GetNumBonds() + 1):
        problems = [p for p in Chem.DetectChemistryProblems(rw) if p.GetType() == "AtomValenceException"]
        if not problems:
            break
        atom = rw.GetAtomWithIdx(min(p.GetAtomIdx() for p in problems))
        bonds = list(atom.GetBonds())
        if not bonds:
            return None
        bond = max(bonds, key=_bond_order)  # max() keeps the first of equal orders
        begin, end, order = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond.GetBondTypeAsDouble()
        rw.RemoveBond(begin, end)
        lowered = 1 if order == 1.5 else int(order) - 1
        if lowered >= 1:
            rw.AddBond(begin, end, BOND_TYPES[lowered])
    return _sanitized_copy(rw.GetMol())


def largest_fragment(mol: Chem.Mol | None) -> Chem.Mol | None:
    """The connected fragment of ``mol`` with the most atoms (the first such one on ties), or None for None.

    Fragments are not sanitized (an unsanitized input stays unsanitized). MoFlow/GDSS pick the fragment with the
    longest SMILES string instead, which almost always is the same one.
    """
    if mol is None:
        return None
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) <= 1:
        return Chem.Mol(mol)
    return max(frags, key=lambda f: f.GetNumAtoms())
