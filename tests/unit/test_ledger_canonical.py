"""The canonical entry encoding and the head signatures (ledger/canonical.py, ledger/signing.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import Number, dumps, entry_text, head_message, loads
from ledger.signing import SignatureError, Signer, key_id, verify_signature
from ledger.store import SignedHead


def test_numbers_keep_their_exact_text_and_keys_are_sorted() -> None:
    text = '{"b": 100.00, "a": [1e-7, 0.10, 12345678901234567890.5], "é": "x\\"y\\n", "n": null}'
    assert dumps(loads(text)) == ('{"a":[1e-7,0.10,12345678901234567890.5],"b":100.00,'
                                  '"n":null,"é":"x\\"y\\n"}')
    assert loads("100.00") == Number("100.00")


def test_floats_are_refused_so_no_number_is_reformatted() -> None:
    with pytest.raises(TypeError):
        dumps({"amount": 0.1})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.text(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(lambda d: Number(str(d))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12)


@given(json_values)
def test_canonical_text_is_json_and_a_fixed_point(value: object) -> None:
    text = dumps(value)
    json.loads(text)  # valid JSON
    assert dumps(loads(text)) == text
    assert "\n" not in text


def test_an_entry_lists_its_parties_once_and_sorted() -> None:
    text = entry_text("drawdowns", "insert", "dd-1", ["b", "a", "b"], "2026-01-01T00:00:00+00:00",
                      {"amount": Number("5.00")})
    assert text == ('{"key":"dd-1","op":"insert","parties":["a","b"],"row":{"amount":5.00},'
                    '"table":"drawdowns","time":"2026-01-01T00:00:00+00:00","v":1}')


def test_heads_are_signed_and_a_changed_head_or_key_fails() -> None:
    signer, other = Signer.generate(), Signer.generate()
    message = head_message(10, b"\x01" * 32, 1700000000000)
    head = SignedHead(10, b"\x01" * 32, 1700000000000, signer.key_id, signer.public_key,
                      signer.sign(message))
    head.verify()
    assert SignedHead.from_json(json.loads(json.dumps(head.to_json()))) == head
    for bad in (SignedHead(11, head.root_hash, head.timestamp_ms, head.key_id, head.public_key,
                           head.signature),
                SignedHead(10, b"\x02" * 32, head.timestamp_ms, head.key_id, head.public_key,
                           head.signature)):
        with pytest.raises(SignatureError):
            bad.verify()
    with pytest.raises(SignatureError):
        head.verify(other.public_key)  # the party pinned another key
    with pytest.raises(SignatureError):
        verify_signature(b"short", message, head.signature)


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "ledger" / "signing.key"
    first = Signer.from_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Signer.from_file(path).public_key == first.public_key
    assert first.key_id == key_id(first.public_key) and len(first.key_id) == 16
    with pytest.raises(FileNotFoundError):
        Signer.from_file(tmp_path / "none.key", create=False)
