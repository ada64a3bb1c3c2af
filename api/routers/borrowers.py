"""Borrowers: the bank sees all; an enterprise sees itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api import scoped_reads
from api.deps import ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import found, responses
from api.schemas import BorrowerPublic, BorrowerRating, Slug

router = APIRouter(prefix="/borrowers", tags=["borrowers"])


@router.get("", response_model=Page[BorrowerPublic], responses=responses(401, 422))
def list_borrowers(conn: ConnDep, principal: CurrentPrincipal, page: PageDep) -> Page[Any]:
    return page.page(scoped_reads.borrowers(conn, principal.scope, page.limit + 1, page.offset))


@router.get("/{borrower_id}", response_model=BorrowerPublic, responses=responses(401, 404, 422))
def get_borrower(conn: ConnDep, principal: CurrentPrincipal,
                 borrower_id: Annotated[Slug, Path(description="borrower id")]) -> dict[str, Any]:
    return found(scoped_reads.borrower(conn, principal.scope, borrower_id), "borrower", borrower_id)


@router.get("/{borrower_id}/rating", response_model=BorrowerRating,
            responses=responses(401, 404, 422))
def get_borrower_rating(conn: ConnDep, principal: CurrentPrincipal,
                        borrower_id: Annotated[Slug, Path(description="borrower id")]
                        ) -> dict[str, Any]:
    """The borrower's current credit rating (score, PD, grade, reason codes) and its history of
    ratings and grade changes; an enterprise sees its own."""
    return found(scoped_reads.borrower_rating(conn, principal.scope, borrower_id), "borrower",
                 borrower_id)
