"""The verifiable ledger, read-only: the signed tree heads (public to every signed-in party), the
entries a caller may see with their inclusion proofs, and consistency proofs between two sizes.
Proofs follow RFC 9162 so any party can check them with its own code."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api.deps import AnyPrincipal, ConnDep, Page, PageDep
from api.problems import ApiProblem, not_found, responses
from api.schemas import Slug
from ledger import merkle, store
from ledger.signing import ALGORITHM

router = APIRouter(prefix="/ledger", tags=["ledger"])

MAX_SIZE = 2**62


class SignedHeadPublic(BaseModel):
    """A signed tree head. The signature (Ed25519) covers the canonical JSON
    `{"log":"pledgewatch","root_hash":<hex>,"timestamp":<ms>,"tree_size":<n>}`."""

    tree_size: int
    root_hash: str = Field(description="hex")
    timestamp: int = Field(description="milliseconds since the epoch")
    key_id: str
    algorithm: str = Field(description=f"{ALGORITHM} (SM2 with SM3 may come later)")
    public_key: str = Field(description="base64, raw 32 bytes")
    signature: str = Field(description="base64")


class EntryPublic(BaseModel):
    leaf_index: int
    table: str
    op: str
    key: str
    parties: list[str]
    entry: str = Field(description="the canonical JSON the leaf hash covers: "
                                   "SHA-256(0x00 || UTF-8 bytes)")
    appended_at: datetime


class EntryProof(EntryPublic):
    leaf_hash: str
    tree_size: int | None = Field(description="the signed head the audit path leads to; null "
                                              "while the entry is not yet under a signed head")
    audit_path: list[str] | None = Field(description="RFC 9162 §2.1.3 inclusion proof, hex")
    head: SignedHeadPublic | None


class ConsistencyProof(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, hex")


def _head(head: store.SignedHead) -> dict[str, Any]:
    return head.to_json()


@router.get("/head", response_model=SignedHeadPublic, responses=responses(401, 404))
def latest_head(conn: ConnDep, _who: AnyPrincipal) -> dict[str, Any]:
    """The latest signed tree head: keep it to check later that the log only grew."""
    head = store.latest_head(conn)
    if head is None:
        raise ApiProblem(404, "no tree head has been signed yet")
    return _head(head)


@router.get("/heads", response_model=Page[SignedHeadPublic], responses=responses(401, 422))
def list_heads(conn: ConnDep, _who: AnyPrincipal, page: PageDep) -> Page[Any]:
    """Signed tree heads, newest first."""
    return page.page([_head(h) for h in store.heads(conn, page.limit + 1, page.offset)])


@router.get("/entries", response_model=Page[EntryPublic], responses=responses(401, 422))
def list_entries(conn: ConnDep, principal: AnyPrincipal, page: PageDep,
                 table: Annotated[Slug | None, Query(description="source table")] = None,
                 key: Annotated[str | None, Query(max_length=200,
                                                  description="the row's key")] = None
                 ) -> Page[Any]:
    """Entries newest first; an enterprise or a warehouse operator sees those that concern it (and
    public ones)."""
    return page.page(store.entries(conn, principal.scope, page.limit + 1, page.offset,
                                   table=table, key=key))


@router.get("/entries/{leaf_index}", response_model=EntryProof, responses=responses(401, 404, 422))
def get_entry(conn: ConnDep, principal: AnyPrincipal,
              leaf_index: Annotated[int, Path(ge=0, le=MAX_SIZE, description="leaf index")],
              tree_size: Annotated[int | None, Query(
                  ge=1, le=MAX_SIZE, description="prove against the head signed at this size "
                                                 "(default: the latest)")] = None
              ) -> dict[str, Any]:
    """An entry with its inclusion proof against a signed head."""
    found = store.entry(conn, leaf_index, principal.scope)
    if found is None:
        raise not_found("ledger entry", leaf_index)
    head = store.latest_head(conn) if tree_size is None else store.head_at(conn, tree_size)
    if tree_size is not None and head is None:
        raise ApiProblem(404, f"no tree head was signed at size {tree_size}")
    leaf = merkle.leaf_hash(found["entry"].encode())
    proven = head is not None and leaf_index < head.tree_size
    path = store.inclusion_proof(conn, leaf_index, head.tree_size) if proven and head else None
    return {**found, "leaf_hash": leaf.hex(),
            "tree_size": head.tree_size if proven and head else None,
            "audit_path": None if path is None else [p.hex() for p in path],
            "head": _head(head) if proven and head else None}


@router.get("/consistency", response_model=ConsistencyProof, responses=responses(401, 404, 422))
def consistency(conn: ConnDep, _who: AnyPrincipal,
                first: Annotated[int, Query(ge=0, le=MAX_SIZE, description="the older size")],
                second: Annotated[int | None, Query(
                    ge=0, le=MAX_SIZE, description="the newer size (default: the latest signed "
                                                   "head's)")] = None) -> dict[str, Any]:
    """Proof that the log at ``second`` entries extends the log at ``first`` entries."""
    if second is None:
        head = store.latest_head(conn)
        if head is None:
            raise ApiProblem(404, "no tree head has been signed yet")
        second = head.tree_size
    if first > second:
        raise ApiProblem(422, f"first ({first}) must not exceed second ({second})")
    if second > store.tree_size(conn):
        raise ApiProblem(404, f"the log has fewer than {second} entries")
    proof = store.consistency_proof(conn, first, second)
    return {"first": first, "second": second, "first_root": store.root_at(conn, first).hex(),
            "second_root": store.root_at(conn, second).hex(), "proof": [p.hex() for p in proof]}


