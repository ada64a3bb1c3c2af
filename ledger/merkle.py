"""RFC 9162 Merkle trees, pure: hashing (§2.1.1), inclusion proofs (§2.1.3) and consistency proofs
(§2.1.4) with the RFC's verification algorithms, and a compact range that appends leaves and
names the complete subtrees each append finishes. No I/O.

A proof is planned as the list of RFC subtrees it needs (``[start, end)`` leaf ranges); every such
range is a run of *complete aligned* subtrees (``2**level`` leaves starting at a multiple of
``2**level``), named ``(level, index)``. A store that keeps every complete subtree's hash answers
any proof with O(log n) look-ups (:func:`range_nodes`, :func:`fold_range`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_SIZE = 32
Node = tuple[int, int]  # (level, index): leaves [index * 2**level, (index + 1) * 2**level)
Range = tuple[int, int]  # [start, end) of leaf indexes


class ProofError(ValueError):
    """A proof does not verify, or one was asked for sizes that do not make sense."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (iteratively, through a compact range)."""
    compact = CompactRange()
    for h in leaf_hashes:
        compact.append(h)
    return compact.root()


def mth(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the entries, by the RFC's recursive definition (for tests and small trees)."""
    n = len(entries)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(entries[0])
    k = _split(n)
    return node_hash(mth(entries[:k]), mth(entries[k:]))


# --- planning proofs ------------------------------------------------------------------------------

def inclusion_ranges(index: int, size: int) -> list[Range]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1 as leaf ranges, from the leaf up."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    out: list[Range] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()
    return out


def consistency_ranges(first: int, second: int) -> list[Range]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 as leaf ranges (empty when m == n or m == 0)."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    out: list[Range] = []
    start, end, m, whole = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                out.append((start, end))
            break
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    out.reverse()
    return out


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete aligned subtrees making up an RFC subtree ``[start, end)``, left to right.
    (The ranges of :func:`inclusion_ranges` and :func:`consistency_ranges` always start at a
    multiple of a power of two at least their size, so their MTH folds these from the right.)"""
    out: list[Node] = []
    pos = start
    remaining = end - start
    while remaining:
        level = remaining.bit_length() - 1
        if pos % (1 << level):
            raise ProofError(f"[{start}, {end}) is not a subtree of an RFC 9162 tree")
        out.append((level, pos >> level))
        pos += 1 << level
        remaining -= 1 << level
    return out


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """MTH of an RFC subtree from its :func:`range_nodes` hashes (left to right)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def nodes_for(ranges: Iterable[Range]) -> list[Node]:
    """Every stored subtree the ranges need, each once, in a stable order."""
    return list(dict.fromkeys(n for r in ranges for n in range_nodes(*r)))


def resolve(ranges: Sequence[Range], lookup: Mapping[Node, bytes] | Callable[[Node], bytes]
            ) -> list[bytes]:
    """The hashes of ``ranges`` from the stored subtree hashes."""
    get = lookup.__getitem__ if isinstance(lookup, Mapping) else lookup
    return [fold_range([get(n) for n in range_nodes(*r)]) for r in ranges]


def root_nodes(size: int) -> list[Node]:
    """The complete subtrees whose fold is the root of a tree of ``size`` leaves (its compact
    range), left to right."""
    return range_nodes(0, size) if size else []


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ----------------------------------------------

def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes) -> None:
    """Check that the leaf hash ``leaf`` sits at ``index`` of the tree of ``size`` with ``root``;
    raise :class:`ProofError` when it does not."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("the inclusion path is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion path is too short")
    if r != root:
        raise ProofError("the inclusion path does not lead to the root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       path: Sequence[bytes]) -> None:
    """Check that the tree of ``second`` leaves with ``second_root`` extends the tree of ``first``
    leaves with ``first_root``; raise :class:`ProofError` when it does not."""
    if not 0 <= first <= second:
        raise ProofError(f"size {first} cannot be a prefix of size {second}")
    if first == 0:
        if path:
            raise ProofError("a proof from the empty tree is empty")
        return
    if first == second:
        if path:
            raise ProofError("a proof between equal sizes is empty")
        if first_root != second_root:
            raise ProofError("the same size has two different roots")
        return
    if not path:
        raise ProofError("the consistency proof is empty")
    c = list(path)
    if first & (first - 1) == 0:
        c.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = c[0]
    for p in c[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(p, fr)
            sr = node_hash(p, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != first_root:
        raise ProofError("the consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the consistency proof does not lead to the second root")


# --- appending ------------------------------------------------------------------------------------

class CompactRange:
    """The right edge of a growing tree: the hashes of its complete subtrees, largest first.
    :meth:`append` returns the complete subtrees the new leaf finished (``(level, index, hash)``,
    the leaf itself first), which is what a store keeps."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a tree of {size} leaves has {bin(size).count('1')} edge subtrees")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        index = self.size
        done = [(0, index, leaf)]
        h = leaf
        level = 0
        while (index >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            done.append((level, index >> level, h))
        self.hashes.append(h)
        self.size += 1
        return done

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        return fold_range(self.hashes)
