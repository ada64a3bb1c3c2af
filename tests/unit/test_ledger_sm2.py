"""SM2 (over SM3) head signatures, the national-algorithm option: sign and verify a head, a flipped
bit fails, a head claimed under the other algorithm fails, keys round-trip through PKCS#8 PEM
files (OpenSSL's too), and OpenSSL checks our signatures and we check its."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ledger import merkle, verify
from ledger.canonical import head_message
from ledger.signing import (
    ED25519,
    SM2,
    SignatureError,
    Signer,
    Sm2Signer,
    key_id,
    load_signer,
    verify_signature,
)
from ledger.store import SignedHead

ROOT = merkle.leaf_hash(b"an entry")


def sm2_head(signer: Sm2Signer, size: int = 1, root: bytes = ROOT) -> SignedHead:
    ts = 1_770_000_000_000
    return SignedHead(size, root, ts, signer.key_id, signer.public_key,
                      signer.sign(head_message(size, root, ts)), signer.algorithm)


@pytest.fixture(scope="module")
def sm2() -> Sm2Signer:
    return Sm2Signer.generate()


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_a_head_signed_with_sm2_verifies_and_round_trips_as_json(sm2: Sm2Signer) -> None:
    head = sm2_head(sm2)
    assert sm2.algorithm == SM2 and len(sm2.public_key) == 65 and sm2.public_key[0] == 4
    assert head.key_id == key_id(sm2.public_key)
    head.verify()
    head.verify(sm2.public_key)  # a pinned key
    kept = head.to_json()
    assert kept["algorithm"] == "sm2"
    again = SignedHead.from_json(kept)
    assert again == head
    again.verify()


def test_a_flipped_bit_fails(sm2: Sm2Signer) -> None:
    head = sm2_head(sm2)
    for bit in (0, 7, 8 * 20 + 3, 8 * len(head.signature) - 1):  # DER header, r, s, last bit
        with pytest.raises(SignatureError):
            dataclasses.replace(head, signature=flip(head.signature, bit)).verify()
    with pytest.raises(SignatureError):
        dataclasses.replace(head, root_hash=flip(head.root_hash, 100)).verify()
    with pytest.raises(SignatureError):
        dataclasses.replace(head, tree_size=2).verify()
    with pytest.raises(SignatureError):
        head.verify(Sm2Signer.generate().public_key)  # another pinned key


def test_a_head_claimed_under_the_other_algorithm_fails(sm2: Sm2Signer) -> None:
    head = sm2_head(sm2)
    with pytest.raises(SignatureError):
        dataclasses.replace(head, algorithm=ED25519).verify()
    ed = Signer.generate()
    message = head_message(1, ROOT, 1)
    ed_head = SignedHead(1, ROOT, 1, ed.key_id, ed.public_key, ed.sign(message), ed.algorithm)
    ed_head.verify()
    with pytest.raises(SignatureError):
        dataclasses.replace(ed_head, algorithm=SM2).verify()
    with pytest.raises(SignatureError):  # in the JSON a party kept
        SignedHead.from_json({**ed_head.to_json(), "algorithm": "sm2"}).verify()
    with pytest.raises(SignatureError, match="unknown signature algorithm"):
        verify_signature(ed.public_key, message, ed_head.signature, "rsa")
    with pytest.raises(SignatureError):  # junk instead of DER
        verify_signature(sm2.public_key, message, b"\x30\x02junk", SM2)


def test_check_log_verifies_sm2_heads_and_names_a_bad_one(sm2: Sm2Signer) -> None:
    texts = [f'{{"n":{i}}}' for i in range(5)]
    root3 = merkle.root_of([merkle.leaf_hash(t.encode()) for t in texts[:3]])
    root5 = merkle.root_of([merkle.leaf_hash(t.encode()) for t in texts])
    heads = [sm2_head(sm2, 3, root3), sm2_head(sm2, 5, root5)]
    entries = [(i, t, None) for i, t in enumerate(texts)]
    report = verify.check_log(entries, heads)
    assert report.ok and report.heads == 2, report.problems
    forged = [heads[0], dataclasses.replace(heads[1], signature=flip(heads[1].signature, 200))]
    bad = verify.check_log(entries, forged)
    assert not bad.ok and "head at size 5" in bad.problems[0]


def test_sm2_keys_round_trip_through_a_pkcs8_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger" / "signing-sm2.key"
    first = load_signer(path, SM2)
    assert isinstance(first, Sm2Signer)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_signer(path, SM2, create=False)
    assert again.public_key == first.public_key and again.key_id == first.key_id
    with pytest.raises(FileNotFoundError):
        load_signer(tmp_path / "none.key", SM2, create=False)
    with pytest.raises(ValueError, match="holds an SM2 key"):
        Signer.from_file(path)  # an SM2 file where an Ed25519 key is expected
    ed_path = tmp_path / "ed.key"
    Signer.from_file(ed_path)
    with pytest.raises(ValueError, match="does not hold an SM2"):
        Sm2Signer.from_file(ed_path)
    with pytest.raises(ValueError, match="unknown ledger signature algorithm"):
        load_signer(ed_path, "rsa")
    with pytest.raises(ValueError):
        Sm2Signer(b"\x00" * 32)


def _openssl_sm2() -> bool:
    if shutil.which("openssl") is None:
        return False
    probe = subprocess.run(["openssl", "list", "-public-key-algorithms"], capture_output=True,
                           text=True, check=False)
    return "SM2" in probe.stdout


@pytest.mark.skipif(not _openssl_sm2(), reason="no openssl with SM2 here")
def test_openssl_and_we_check_each_others_sm2_signatures(tmp_path: Path) -> None:
    """Interoperability: the key file, the DER signature and Z_A with the default signer id are
    the standard ones (OpenSSL 3: `dgst -sm3 -sigopt distid:1234567812345678`)."""
    ours = tmp_path / "ours.key"
    signer = Sm2Signer.from_file(ours)
    message = head_message(3, ROOT, 1_770_000_000_000)
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(signer.sign(message))

    def openssl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False,
                              cwd=tmp_path)

    assert openssl("pkey", "-in", "ours.key", "-pubout", "-out", "ours.pub").returncode == 0
    checked = openssl("dgst", "-sm3", "-sigopt", "distid:1234567812345678", "-verify",
                      "ours.pub", "-signature", "sig", "msg")
    assert checked.returncode == 0 and "Verified OK" in checked.stdout, checked

    assert openssl("genpkey", "-algorithm", "SM2", "-out", "theirs.key").returncode == 0
    theirs = Sm2Signer.from_file(tmp_path / "theirs.key", create=False)  # OpenSSL's PKCS#8
    signed = openssl("dgst", "-sm3", "-sigopt", "distid:1234567812345678", "-sign",
                     "theirs.key", "-out", "theirs.sig", "msg")
    assert signed.returncode == 0, signed
    verify_signature(theirs.public_key, message, (tmp_path / "theirs.sig").read_bytes(), SM2)
