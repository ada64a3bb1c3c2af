"""Credit ratings over the API: officers run the rating and list the newest rating of every
borrower (by grade); an enterprise reads its own rating and grade history — another's is a 404
exactly like a borrower that does not exist — and may neither list nor run ratings."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import A, B

pytestmark = pytest.mark.integration

V1 = "/api/v1"


def run(api: TestClient, headers: dict[str, str]) -> Any:
    r = api.post(f"{V1}/ratings/run", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_enterprise_sees_only_its_own_rating(api: TestClient, as_officer: dict[str, str],
                                                as_a: dict[str, str]) -> None:
    unrated = api.get(f"{V1}/borrowers/{A}/rating", headers=as_a)
    assert unrated.status_code == 200
    assert unrated.json() == {"borrower_id": A, "current": None, "history": [],
                              "grade_changes": []}
    done = run(api, as_officer)
    assert done["model"] == "expert" and done["version"] == 1 and not done["skipped"]
    assert done["rated"] >= 2 and done["features"] == done["rated"]
    own = api.get(f"{V1}/borrowers/{A}/rating", headers=as_a)
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["current"]["borrower_id"] == A and body["current"]["grade"] in "ABCDEFG"
    assert body["current"]["reasons"] and body["current"]["reasons"][0]["points_lost"] > 0
    assert [c["previous_grade"] for c in body["grade_changes"]] == [None]
    assert body["grade_changes"][0]["changed_by"] == "officer"
    other = api.get(f"{V1}/borrowers/{B}/rating", headers=as_a)
    nobody = api.get(f"{V1}/borrowers/sup-made-up/rating", headers=as_a)
    assert other.status_code == nobody.status_code == 404
    assert other.json()["detail"].replace(B, "X") == nobody.json()["detail"].replace(
        "sup-made-up", "X")
    officer = api.get(f"{V1}/borrowers/{B}/rating", headers=as_officer)
    assert officer.status_code == 200 and officer.json()["current"]["borrower_id"] == B


def test_officers_list_and_filter_ratings_enterprises_may_not(
        api: TestClient, as_officer: dict[str, str], as_a: dict[str, str]) -> None:
    run(api, as_officer)
    listed = api.get(f"{V1}/ratings", headers=as_officer)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert {A, B} <= {r["borrower_id"] for r in items}
    grade = next(r["grade"] for r in items if r["borrower_id"] == A)
    same = api.get(f"{V1}/ratings", params={"grade": grade}, headers=as_officer).json()["items"]
    assert same and all(r["grade"] == grade for r in same)
    assert api.get(f"{V1}/ratings", params={"grade": "Z"}, headers=as_officer).status_code == 422
    assert api.get(f"{V1}/ratings", headers=as_a).status_code == 403
    assert api.post(f"{V1}/ratings/run", headers=as_a).status_code == 403
    assert api.get(f"{V1}/ratings").status_code == 401
