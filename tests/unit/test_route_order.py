"""The order of the app's routers changes only how long a match takes, never which route answers.

api/app.py includes the hot write paths' routers (drawdowns, voucher transfers) first, since every
request is matched route by route in that order. That is safe while no route can match a path of
another router's (not even with another method: a 405's Allow header comes from the first partial
match), and no two routes with a method in common match the same path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI

from api.app import create_app
from api.deps import ApiConfig


def live_app() -> FastAPI:
    return create_app("postgresql://route-order@127.0.0.1:9/unused", ApiConfig(jwt_secret="s" * 40),
                      live=False)


def routes(app: FastAPI) -> Iterator[tuple[int, Any]]:
    """(index of the app's top-level route or included router, route) of every route with methods
    and a path, the included routers flattened (FastAPI ≥ 0.165 keeps them as such)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]  # noqa: PLC0415
    except ImportError:  # older FastAPI: app.routes are the routes themselves
        for n, top in enumerate(app.routes):
            if getattr(top, "methods", None) and hasattr(top, "path_regex"):
                yield n, top
        return
    for n, top in enumerate(app.routes):
        for context in iter_route_contexts([top]):
            if getattr(context, "methods", None) and hasattr(context, "path_regex"):
                yield n, context


def sample(path_format: str) -> str:
    """A path the route matches: every parameter "1" (a valid str, int or slug)."""
    return re.sub(r"\{[^}]+\}", "1", path_format)


def test_every_route_matches_its_own_sample_path() -> None:
    for _n, route in routes(live_app()):
        assert route.path_regex.match(sample(route.path_format)), route.path_format


def test_no_route_can_answer_for_another_so_the_routers_order_is_free() -> None:
    found = list(routes(live_app()))
    assert len(found) > 50
    clashes = [
        f"{a.path_format} {sorted(a.methods)} matches {sample(b.path_format)} "
        f"({b.path_format} {sorted(b.methods)})"
        for n, a in found for m, b in found
        if a is not b and (n != m or set(a.methods) & set(b.methods))
        and a.path_regex.match(sample(b.path_format))]
    assert clashes == []


def test_the_hot_write_paths_are_matched_first() -> None:
    app = live_app()
    first_api = min(n for n, route in routes(app) if route.path_format.startswith("/api/v1/")
                    and not route.path_format.startswith(("/api/v1/health", "/api/v1/metrics")))
    hot = {route.path_format for n, route in routes(app) if n <= first_api + 1}
    assert {"/api/v1/drawdowns", "/api/v1/vouchers/{voucher_id}/transfer"} <= hot
