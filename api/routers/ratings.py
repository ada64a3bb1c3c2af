"""Credit ratings for the bank: the newest rating of every borrower (by grade), and a run now of
the daily features and ratings. An enterprise reads its own rating under /borrowers/{id}/rating."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from api import scoped_reads
from api.deps import BankUser, ConnDep, Page, PageDep
from api.problems import responses
from api.schemas import Grade, RatingPublic, RatingRun
from rating import service

router = APIRouter(prefix="/ratings", tags=["ratings"])


@router.get("", response_model=Page[RatingPublic], responses=responses(401, 403, 422))
def list_ratings(conn: ConnDep, _officer: BankUser, page: PageDep,
                 grade: Grade | None = None) -> Page[Any]:
    """The newest rating of each borrower, by borrower id; `grade` keeps one grade."""
    return page.page(scoped_reads.ratings(conn, grade, page.limit + 1, page.offset))


@router.post("/run", response_model=RatingRun, responses=responses(401, 403))
def run_ratings(conn: ConnDep, officer: BankUser, request: Request) -> dict[str, Any]:
    """Compute today's features and rate every borrower now (the daily run, on demand): the
    registry's champion if the app has one, else the expert card."""
    registry = getattr(request.app.state, "rating_registry", None)
    result = service.rate_all(conn, datetime.now(UTC).date(), by=officer.subject,
                              model=service.current_card(registry))
    return result.to_dict()
