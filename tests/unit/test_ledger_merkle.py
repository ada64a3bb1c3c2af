"""RFC 9162 hashing, proofs and verification (ledger/merkle.py): the Certificate Transparency test
vectors, an independent implementation (pymerkle) where installed, and properties over random
trees — every inclusion and consistency proof verifies, and a flipped bit anywhere fails."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle

# The eight leaves of the Certificate Transparency reference tests (certificate-transparency-go,
# merkle tree tests) and the roots of their prefixes of size 1..8.
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]


def store_of(entries: list[bytes]) -> dict[merkle.Node, bytes]:
    """Every complete subtree, as the database keeps them, built by appending."""
    nodes: dict[merkle.Node, bytes] = {}
    compact = merkle.CompactRange()
    for e in entries:
        for level, index, h in compact.append(merkle.leaf_hash(e)):
            nodes[(level, index)] = h
    return nodes


def inclusion(entries: list[bytes], m: int, n: int) -> list[bytes]:
    return merkle.resolve(merkle.inclusion_ranges(m, n), store_of(entries))


def consistency(entries: list[bytes], m: int, n: int) -> list[bytes]:
    return merkle.resolve(merkle.consistency_ranges(m, n), store_of(entries))


def path_rfc(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 9162 §2.1.3.1 writes it, recursively."""
    n = len(d)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*path_rfc(m, d[:k]), merkle.mth(d[k:])]
    return [*path_rfc(m - k, d[k:]), merkle.mth(d[:k])]


def subproof_rfc(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1, recursively."""
    n = len(d)
    if m == n:
        return [] if b else [merkle.mth(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof_rfc(m, d[:k], b), merkle.mth(d[k:])]
    return [*subproof_rfc(m - k, d[k:], False), merkle.mth(d[:k])]


def test_hashes_are_domain_separated_as_rfc_9162_says() -> None:
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(
        b"\x01" + b"a" * 32 + b"b" * 32).digest()


def test_roots_match_the_certificate_transparency_vectors() -> None:
    for n in range(1, 9):
        assert merkle.mth(CT_LEAVES[:n]) == CT_ROOTS[n - 1], n
        assert merkle.root_of([merkle.leaf_hash(e) for e in CT_LEAVES[:n]]) == CT_ROOTS[n - 1]
        assert merkle.resolve([(0, n)], store_of(CT_LEAVES))[0] == CT_ROOTS[n - 1]


def test_known_proofs_of_the_ct_tree() -> None:
    # RFC 9162 §2.1.5's example tree of 7 leaves: the path of d0 is [b, h, l] and the
    # consistency proof from 3 leaves to 7 is [c, d, g, l].
    d = CT_LEAVES[:7]
    b, c, d_ = (merkle.leaf_hash(d[i]) for i in (1, 2, 3))
    h = merkle.node_hash(c, d_)
    ll = merkle.mth(d[4:7])
    g = merkle.mth(d[:2])
    assert inclusion(CT_LEAVES, 0, 7) == [b, h, ll]
    assert consistency(CT_LEAVES, 3, 7) == [c, d_, g, ll]
    assert consistency(CT_LEAVES, 4, 7) == [ll]
    assert consistency(CT_LEAVES, 6, 7) == [merkle.mth(d[4:6]), merkle.leaf_hash(d[6]),
                                            merkle.mth(d[:4])]


@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_proofs_equal_the_rfcs_recursive_definitions(case: tuple[int, int]) -> None:
    n, m = case
    d = [i.to_bytes(4, "big") for i in range(n)]
    assert inclusion(d, m, n) == path_rfc(m, d)
    first = m + 1
    assert consistency(d, first, n) == (subproof_rfc(first, d, True) if first < n else [])


def test_against_pymerkle_an_independent_implementation() -> None:
    pymerkle = pytest.importorskip("pymerkle")
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    entries = [f"entry {i}".encode() for i in range(37)]
    for e in entries:
        tree.append_entry(e)
    for n in range(1, 38):
        assert tree.get_root(n) == merkle.mth(entries[:n])
        for m in range(n):
            theirs = tree.prove_inclusion(m + 1, n).serialize()["path"]  # 1-based; leaf first
            assert [bytes.fromhex(p) for p in theirs[1:]] == inclusion(entries, m, n), (m, n)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 130).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(0, n - 1), st.integers(1, n), st.integers(0, 10_000))))
def test_every_proof_verifies_and_a_flipped_bit_fails(case: tuple[int, int, int, int]) -> None:
    n, m, first, bit = case
    entries = [i.to_bytes(3, "big") * (i % 5 + 1) for i in range(n)]
    nodes = store_of(entries)
    root = merkle.resolve([(0, n)], nodes)[0]
    assert root == merkle.mth(entries)
    leaf = merkle.leaf_hash(entries[m])
    path = merkle.resolve(merkle.inclusion_ranges(m, n), nodes)
    merkle.verify_inclusion(leaf, m, n, path, root)

    def flip(data: bytes) -> bytes:
        i = bit % (len(data) * 8)
        return data[: i // 8] + bytes([data[i // 8] ^ (1 << (i % 8))]) + data[i // 8 + 1:]

    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(flip(leaf), m, n, path, root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(leaf, m, n, path, flip(root))
    if path:
        j = bit % len(path)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaf, m, n, [*path[:j], flip(path[j]), *path[j + 1:]], root)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaf, m, n, path[:-1], root)
    if n > 1:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(leaf, (m + 1) % n, n, path, root)

    first_root = merkle.resolve([(0, first)], nodes)[0]
    proof = merkle.resolve(merkle.consistency_ranges(first, n), nodes)
    merkle.verify_consistency(first, n, first_root, root, proof)
    if first < n:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(first, n, flip(first_root), root, proof)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(first, n, first_root, flip(root), proof)
        j = bit % len(proof)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(first, n, first_root, root,
                                      [*proof[:j], flip(proof[j]), *proof[j + 1:]])
        # a history rewritten before ``first``: its root at ``first`` differs
        other = entries[:]
        other[bit % first] += b"!"
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(first, n, first_root, merkle.mth(other),
                                      merkle.resolve(merkle.consistency_ranges(first, n),
                                                     store_of(other)))


def test_out_of_range_requests_are_refused() -> None:
    for m, n in ((0, 0), (5, 5), (-1, 3)):
        with pytest.raises(merkle.ProofError):
            merkle.inclusion_ranges(m, n)
    with pytest.raises(merkle.ProofError):
        merkle.consistency_ranges(5, 3)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(3, 3, b"a" * 32, b"b" * 32, [])
    merkle.verify_consistency(0, 3, merkle.EMPTY_ROOT, b"b" * 32, [])
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(2, 3, b"a" * 32, b"b" * 32, [])


def test_a_compact_range_resumes_where_it_left_off() -> None:
    entries = [bytes([i]) for i in range(45)]
    nodes = store_of(entries)
    for size in range(46):
        edge = merkle.root_nodes(size)
        compact = merkle.CompactRange(size, [nodes[x] for x in edge])
        assert compact.root() == merkle.mth(entries[:size])
        for e in entries[size:]:
            compact.append(merkle.leaf_hash(e))
        assert compact.root() == merkle.mth(entries)
