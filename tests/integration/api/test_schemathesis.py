"""Property-based tests of the whole API against its own OpenAPI schema (schemathesis, in-process
over ASGI, no network): for every operation and generated input — valid and invalid — signed in
once as an officer and once as enterprise A, no answer is a 5xx and every answer conforms to the
schema: a documented status code, the documented content type, a body matching its schema.

schemathesis' pytest integration (``schema.parametrize`` / ``from_fixture``) does not run under
pytest 9 (it sets ``Function._nodeid``), so each caller's test walks the operations itself with
one Hypothesis test per operation and mode, built from ``operation.as_strategy``. One world (a
fresh database) serves every operation of a caller, which keeps the whole run well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.security import Role, issue_token
from pledgewatch.http import create_app
from tests.integration.api.conftest import JWT_SECRET, A, World
from tests.integration.api.conftest import settings as app_settings

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# An endless text/event-stream: the request never completes, so there is no response to check.
EXCLUDED = {"/api/v1/events"}
AUTH_HEADERS = ("X-API-Key", "Authorization")
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 10, schemathesis.GenerationMode.NEGATIVE: 6}


@pytest.fixture
def api_schema(world: World, tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    app = create_app(world.url, settings=app_settings(tmp_path), live=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    # schemathesis keeps an app's lifespan (our connection pool) running for the rest of the
    # process unless told otherwise; this test's database is dropped after it.
    asgi.shutdown_lifespans()


def credentials(world: World, who: str) -> dict[str, str]:
    if who == "officer":
        token = issue_token(JWT_SECRET, world.officer, Role.OFFICER, timedelta(hours=1))
        return {"Authorization": f"Bearer {token}"}
    return {"X-API-Key": world.key[A]}


@pytest.mark.parametrize("who", ["officer", "enterprise"])
def test_api_conforms_to_its_schema(world: World, api_schema: schemathesis.BaseSchema,
                                    who: str) -> None:
    headers = credentials(world, who)
    failures: list[str] = []
    tested = 0
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the schema of an operation is invalid: {result.err()}")
            continue
        operation = result.ok()
        if operation.path in EXCLUDED:
            continue
        for mode, examples in EXAMPLES.items():

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck),
                      phases=[Phase.explicit, Phase.generate, Phase.shrink])
            def run(case: schemathesis.Case[Any]) -> None:
                for name in AUTH_HEADERS:  # generated from the security schemes: ours instead
                    if case.headers is not None:
                        case.headers.pop(name, None)
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                pass
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported below
                failures.append(f"{operation.label} ({mode.value}): {exc}")
            tested += 1
    assert tested >= 40, tested
    assert not failures, "\n\n".join(failures)
