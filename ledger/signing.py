"""Keys for signing tree heads, in one of two algorithms (``PLEDGEWATCH_LEDGER_ALGORITHM``):

- ``ed25519`` (the default, through ``cryptography``): a PKCS#8 PEM key; the public key is the raw
  32 bytes; the signature the raw 64 bytes (RFC 8032).
- ``sm2`` for banks that must use national algorithms (through ``gmalg``, pure Python): SM2 over
  SM3 (GB/T 32918.2, the digest ``SM3(Z_A || message)`` with the default signer id
  ``1234567812345678``); a PKCS#8 PEM key (``id-ecPublicKey`` with curve ``sm2p256v1``, the form
  ``openssl genpkey -algorithm SM2`` writes); the public key is the uncompressed point
  ``04 || x || y`` (65 bytes); the signature DER ``SEQUENCE { r INTEGER, s INTEGER }``
  (GB/T 35276), as OpenSSL and GmSSL write it.

Only the head signatures change with the algorithm: the Merkle tree is RFC 9162 SHA-256 either
way. A key file is made on first use with mode 0600. A key is named by its id: the first 16 hex
digits of SHA-256 of its public key bytes (as above)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import gmalg
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

Algorithm = Literal["ed25519", "sm2"]
ED25519: Algorithm = "ed25519"
SM2: Algorithm = "sm2"
ALGORITHMS: tuple[Algorithm, ...] = (ED25519, SM2)
ALGORITHM: Algorithm = ED25519  # the default
SM2_SIGNER_ID = b"1234567812345678"  # GB/T 35276's default distinguishing identifier


class SignatureError(ValueError):
    pass


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


class HeadSigner(Protocol):
    """What the sequencer needs of a key: :class:`Signer` (Ed25519) or :class:`Sm2Signer`."""

    @property
    def algorithm(self) -> Algorithm: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def _write_new(path: Path, pem: bytes) -> bool:
    """Write ``pem`` to a new file (mode 0600); False when another process made it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 key."""

    private_key: Ed25519PrivateKey

    @property
    def algorithm(self) -> Algorithm:
        return ED25519

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> Signer:
        """The key in ``path`` (PKCS#8 PEM, unencrypted); a new one is written there first when
        the file does not exist and ``create`` is set."""
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"no ledger signing key at {path}")
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            if not _write_new(path, pem):  # another process made it first: use theirs
                return cls.from_file(path, create=False)
            return cls(key)
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            if _sm2_secret(path.read_bytes()) is not None:
                raise ValueError(f"{path} holds an SM2 key, not an Ed25519 one (set "
                                 "PLEDGEWATCH_LEDGER_ALGORITHM=sm2, or use another key file)"
                                 ) from None
            raise ValueError(f"{path} does not hold an Ed25519 private key: {exc}") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(loaded)


# --- SM2 ------------------------------------------------------------------------------------------

# PKCS#8 PrivateKeyInfo for an EC key on sm2p256v1, without the optional public key:
# SEQUENCE { INTEGER 0, SEQUENCE { OID id-ecPublicKey, OID sm2p256v1 (1.2.156.10197.1.301) },
#            OCTET STRING { SEQUENCE { INTEGER 1, OCTET STRING <32 bytes> } } }
_SM2_ALGORITHM_ID = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")
_SM2_PKCS8_PREFIX = (bytes.fromhex("3041020100") + _SM2_ALGORITHM_ID
                     + bytes.fromhex("0427302502010104") + b"\x20")
_PEM = re.compile(rb"-----BEGIN PRIVATE KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PRIVATE KEY-----")
_SM2_ORDER = 0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_7203DF6B_21C6052B_53BBF409_39D54123


def _der_item(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the DER item at ``at``."""
    tag, length = data[at], data[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 2:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def _sm2_secret(pem: bytes) -> bytes | None:
    """The 32-byte secret of an SM2 PKCS#8 PEM key (ours, or OpenSSL's with the public key
    inside), or None when ``pem`` is not one."""
    match = _PEM.search(pem)
    if match is None:
        return None
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        tag, start, _end = _der_item(der, 0)  # PrivateKeyInfo
        tag_v, _s, after_version = _der_item(der, start)
        tag_a, a_start, a_end = _der_item(der, after_version)
        if (tag, tag_v, tag_a) != (0x30, 0x02, 0x30) or \
                der[a_start - 2:a_end] != _SM2_ALGORITHM_ID:
            return None
        tag_o, o_start, _o_end = _der_item(der, a_end)  # OCTET STRING { ECPrivateKey }
        tag_e, e_start, _e_end = _der_item(der, o_start)
        tag_ev, _s, after_ev = _der_item(der, e_start)
        tag_k, k_start, k_end = _der_item(der, after_ev)
    except (ValueError, IndexError):
        return None
    if (tag_o, tag_e, tag_ev, tag_k) != (0x04, 0x30, 0x02, 0x04) or k_end - k_start != 32:
        return None
    return der[k_start:k_end]


def _sm2_pem(secret: bytes) -> bytes:
    body = base64.encodebytes(_SM2_PKCS8_PREFIX + secret)
    return b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"


@dataclass(frozen=True)
class Sm2Signer:
    """An SM2 key: its 32-byte secret and (derived from it) its public point."""

    secret: bytes = field(repr=False)
    public_key: bytes = b""

    def __post_init__(self) -> None:
        d = int.from_bytes(self.secret, "big")
        if len(self.secret) != 32 or not 1 <= d <= _SM2_ORDER - 2:
            raise ValueError("not an SM2 private key (32 bytes, 1 <= d <= n - 2)")
        if not self.public_key:
            object.__setattr__(self, "public_key", gmalg.SM2().generate_pk(self.secret))

    @property
    def algorithm(self) -> Algorithm:
        return SM2

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """SM2 over SM3 (random k from ``secrets``), DER-encoded."""
        r, s = gmalg.SM2(self.secret, SM2_SIGNER_ID, self.public_key).sign(message)
        return encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))

    def pem(self) -> bytes:
        return _sm2_pem(self.secret)

    @classmethod
    def generate(cls) -> Sm2Signer:
        secret, public = gmalg.SM2().generate_keypair()
        return cls(secret, public)

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> Sm2Signer:
        """The SM2 key in ``path`` (PKCS#8 PEM, unencrypted, e.g. from ``openssl genpkey
        -algorithm SM2``); a new one is written there first when the file does not exist and
        ``create`` is set."""
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"no ledger signing key at {path}")
            key = cls.generate()
            if not _write_new(path, key.pem()):
                return cls.from_file(path, create=False)
            return key
        secret = _sm2_secret(path.read_bytes())
        if secret is None:
            raise ValueError(f"{path} does not hold an SM2 private key (PKCS#8 PEM)")
        return cls(secret)


def _verify_sm2(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != 65 or public_key[0] != 4:
        return False
    r, s = decode_dss_signature(signature)  # ValueError: not DER
    if not (0 < r < _SM2_ORDER and 0 < s < _SM2_ORDER):
        return False
    verifier = gmalg.SM2(None, SM2_SIGNER_ID, public_key)
    return bool(verifier.verify(message, r.to_bytes(32, "big"), s.to_bytes(32, "big")))


def _verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


VERIFIERS: dict[str, Callable[[bytes, bytes, bytes], bool]] = {
    ED25519: _verify_ed25519, SM2: _verify_sm2}


def verify_signature(public_key: bytes, message: bytes, signature: bytes,
                     algorithm: str = ED25519) -> None:
    """Check ``signature`` with the verifier of ``algorithm`` (the one the key is recorded with);
    SignatureError when it does not verify, or the algorithm is unknown."""
    verifier = VERIFIERS.get(algorithm)
    if verifier is None:
        raise SignatureError(f"unknown signature algorithm {algorithm!r}")
    try:
        ok = verifier(public_key, message, signature)
    except Exception:  # noqa: BLE001 - a malformed key or signature is a failed check
        ok = False
    if not ok:
        raise SignatureError(f"the signature does not verify with this {algorithm} public key")


def load_signer(path: Path, algorithm: str = ED25519, *, create: bool = True) -> HeadSigner:
    """The key of ``algorithm`` in ``path`` (made there first when missing and ``create``)."""
    if algorithm == ED25519:
        return Signer.from_file(path, create=create)
    if algorithm == SM2:
        return Sm2Signer.from_file(path, create=create)
    raise ValueError(f"unknown ledger signature algorithm {algorithm!r} (one of "
                     f"{', '.join(ALGORITHMS)})")
