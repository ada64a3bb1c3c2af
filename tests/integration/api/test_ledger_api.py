"""The ledger over HTTP with two tenants: signed heads for every signed-in party, an enterprise's
own entries with inclusion proofs that verify against the signed head, nothing of the other
tenant's (404 exactly as for a made-up index), and consistency proofs between two heads."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from ledger import merkle
from ledger.appender import drain
from ledger.signing import Signer
from ledger.store import SignedHead
from tests.integration.api.conftest import FAC, A, B, World

pytestmark = pytest.mark.integration

V1 = "/api/v1/ledger"
SIGNER = Signer.generate()


def repayment(conn: psycopg.Connection, borrower: str, amount: int) -> str:
    row = conn.execute("INSERT INTO repayments (facility_id, amount) VALUES (%s, %s) RETURNING id",
                       (FAC[borrower], amount)).fetchone()
    assert row is not None
    return str(row[0])


def appended(conn: psycopg.Connection) -> SignedHead:
    head = drain(conn, SIGNER).head
    assert head is not None
    return head


def index_of(api: TestClient, headers: dict[str, str], key: str) -> int:
    r = api.get(f"{V1}/entries", params={"table": "repayments", "key": key}, headers=headers)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 1, items
    return int(items[0]["leaf_index"])


def test_heads_entries_and_proofs_per_tenant(api: TestClient, world: World,
                                             as_a: dict[str, str], as_b: dict[str, str],
                                             as_officer: dict[str, str]) -> None:
    assert api.get(f"{V1}/head", headers=as_a).status_code == 404  # nothing signed yet
    with world.connect() as conn:
        mine, theirs = repayment(conn, A, 11), repayment(conn, B, 22)
        signed = appended(conn)

    body = api.get(f"{V1}/head", headers=as_a).json()
    head = SignedHead.from_json(body)
    assert head == signed
    head.verify(SIGNER.public_key)
    assert api.get(f"{V1}/heads", headers=as_b).json()["items"] == [body]

    listed = api.get(f"{V1}/entries", params={"limit": 500}, headers=as_a).json()["items"]
    assert listed and all(A in e["parties"] or "*" in e["parties"] for e in listed)
    my_index = index_of(api, as_a, mine)
    their_index = index_of(api, as_officer, theirs)
    assert api.get(f"{V1}/entries", params={"table": "repayments", "key": theirs},
                   headers=as_a).json()["items"] == []

    got = api.get(f"{V1}/entries/{my_index}", headers=as_a)
    assert got.status_code == 200, got.text
    proof: dict[str, Any] = got.json()
    assert proof["tree_size"] == head.tree_size and proof["head"] == body
    leaf = merkle.leaf_hash(proof["entry"].encode())
    assert proof["leaf_hash"] == leaf.hex()
    merkle.verify_inclusion(leaf, my_index, head.tree_size,
                            [bytes.fromhex(p) for p in proof["audit_path"]], head.root_hash)
    with pytest.raises(merkle.ProofError):  # the entry with another amount is not in the log
        merkle.verify_inclusion(merkle.leaf_hash(proof["entry"].replace('"amount":11.00',
                                                                        '"amount":1.00').encode()),
                                my_index, head.tree_size,
                                [bytes.fromhex(p) for p in proof["audit_path"]], head.root_hash)

    hidden = api.get(f"{V1}/entries/{their_index}", headers=as_a)
    made_up = api.get(f"{V1}/entries/987654321", headers=as_a)
    assert hidden.status_code == made_up.status_code == 404
    assert (hidden.json()["detail"].replace(str(their_index), "<id>")
            == made_up.json()["detail"].replace("987654321", "<id>"))
    assert api.get(f"{V1}/entries/{their_index}", headers=as_officer).status_code == 200
    assert api.get(f"{V1}/entries/{my_index}", headers=as_b).status_code == 404

    # the log grows; a party that kept the first head checks that it was only extended
    with world.connect() as conn:
        repayment(conn, A, 33)
        later = appended(conn)
    r = api.get(f"{V1}/consistency", params={"first": head.tree_size}, headers=as_b)
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["second"] == later.tree_size and c["second_root"] == later.root_hash.hex()
    merkle.verify_consistency(head.tree_size, later.tree_size, head.root_hash, later.root_hash,
                              [bytes.fromhex(p) for p in c["proof"]])
    # a proof against an older signed head on request
    old = api.get(f"{V1}/entries/{my_index}", params={"tree_size": head.tree_size},
                  headers=as_a).json()
    assert old["tree_size"] == head.tree_size
    assert api.get(f"{V1}/entries/{my_index}", params={"tree_size": later.tree_size + 1},
                   headers=as_a).status_code == 404
    assert api.get(f"{V1}/consistency", params={"first": 5, "second": 2},
                   headers=as_a).status_code == 422
    assert api.get(f"{V1}/consistency", params={"first": 1, "second": 10**9},
                   headers=as_a).status_code == 404
    for path in ("/head", "/heads", "/entries", f"/entries/{my_index}", "/consistency?first=1"):
        assert api.get(V1 + path).status_code == 401
