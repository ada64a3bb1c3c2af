"""The two-tenant authorisation matrix (OWASP API1/API5) and the credential checks.

Every route that takes an id in its path has a row in :data:`MATRIX`; a route added without one
fails :func:`test_every_route_with_an_id_is_in_the_matrix`. Each row says who may call the route
(anyone signed in, bank users, admins), how to make an object of borrower A or B for it, an id
that names nothing, and — for routes that change something — the rows it would change. From the
table the tests check that:

* enterprise A asking about B's object gets exactly what it gets for a made-up id (404, or 403 on
  bank-only and admin-only routes): same status, same problem body up to the id itself, so it
  cannot learn that B's object exists; and the database row is unchanged afterwards;
* A reads its own objects, and is refused bank-only and admin-only actions on them too;
* an officer reads everyone's objects and acts on them; admin-only routes refuse officers;
* admins act on admin-only routes;
* a warehouse operator (its own API key, storing A's lot) reads the lots it stores and the ledger
  entries naming it (:attr:`Row.operator` ``"read"``): 200 on its own, on anyone else's exactly
  what a made-up id gets (404); every other route is 403 whatever the object, and changes nothing.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
import psycopg
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from api.accounts import issue_api_key
from api.problems import MEDIA_TYPE
from api.security import ALGORITHM, ISSUER, Role, issue_token
from ledger import store as ledger_store
from ledger.appender import drain
from ledger.signing import Signer
from lending import financing, reconciliation, statement_file
from lending import operations as service
from lending.domain.alerts import Alert, AlertType, Severity
from lending.domain.model import ReleaseStatus
from lending.store import insert_alert
from notifier.address_policy import DestinationPolicy
from notifier.webhook_store import create_webhook
from tests.integration.api.conftest import DEVICE, FAC, JWT_SECRET, LOT, A, B, World, login

CORE = "core-mill"  # the core enterprise of A's and B's chain
LEDGER_SIGNER = Signer.generate()

pytestmark = pytest.mark.integration

V1 = "/api/v1"
Params = dict[str, str]
# read: anyone signed in, on what they may see; bank: officers and admins; admin: admins only;
# holder: only the enterprise holding the object acts (a bank user is refused); debtor: the
# enterprise that owes it or a bank user (A, a supplier, owes nothing: 404 like a made-up id).
Access = Literal["read", "bank", "admin", "holder", "debtor"]
# a warehouse operator: "read" the objects of the lots it stores, or "refused" (403) everywhere
OperatorAccess = Literal["read", "refused"]
NOT_VISIBLE = ("read", "holder", "debtor")  # A on B's object: 404, exactly as for a made-up id


@dataclass
class Ctx:
    """Makes the objects the matrix acts on, as the bank would (not through the routes tested)."""

    world: World
    conn: psycopg.Connection
    made: int = 0

    def unique(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}-{self.made}"

    def alert(self, borrower: str) -> Params:
        return {"alert_id": str(self.world.alert[borrower])}

    def release(self, borrower: str, approved: bool = False) -> Params:
        release_id = self.unique(f"rel-{borrower}")
        service.request_release(self.conn, release_id, LOT[borrower], 1, datetime.now(UTC))
        if approved:
            service.advance_release(self.conn, release_id, ReleaseStatus.APPROVED,
                                    datetime.now(UTC))
        return {"release_id": release_id}

    def snapshot(self, borrower: str) -> Params:
        row = self.conn.execute("SELECT max(id) FROM limit_snapshots WHERE facility_id = %s",
                                (FAC[borrower],)).fetchone()
        assert row is not None and row[0] is not None
        return {"facility_id": FAC[borrower], "snapshot_id": str(row[0])}

    def webhook(self, borrower: str) -> Params:
        row = create_webhook(self.conn, "https://hooks.example.com/pledgewatch",
                             secrets.token_hex(16), borrower, "matrix", "officer",
                             policy=DestinationPolicy.parse(["hooks.example.com"]))
        return {"webhook_id": str(row["id"])}

    def receivable(self, borrower: str) -> Params:
        receivable_id = self.unique(f"ar-{borrower}")
        service.insert_receivable(self.conn, receivable_id, FAC[borrower], "Debtor Ltd", 1000.0,
                                  datetime.now(UTC) + timedelta(days=30), verified=False,
                                  posted_by="enterprise")
        return {"receivable_id": receivable_id}

    def drawdown(self, borrower: str) -> Params:
        """A drawdown waiting for an officer (an open critical alert holds it) on a facility whose
        live limit leaves room to approve it."""
        insert_alert(self.conn, Alert(
            key=self.unique("matrix-hold"), type=AlertType.SENSOR_TAMPER, severity=Severity.CRITICAL,
            facility_id=FAC[borrower], lot_id=None, message="seal broken", evidence={},
            raised_at=datetime.now(UTC), auto_resolve=False))
        self.conn.execute(
            "INSERT INTO limit_snapshots (facility_id, time, credit_limit, available, outstanding,"
            " collateral_value, inputs) VALUES (%s, now(), 1e9, 1e9, 0, 1e9, '{}')",
            (FAC[borrower],))
        row, _ = financing.request_drawdown(
            self.conn, FAC[borrower], 100, "CNY", 30, "matrix", by="enterprise",
            idempotency_key=self.unique("matrix-key"), now=datetime.now(UTC))
        assert row["status"] == "pending"
        return {"drawdown_id": row["drawdown_id"]}

    def blacklisted(self, borrower: str) -> Params:
        financing.blacklist_add(self.conn, borrower, "matrix", "officer", datetime.now(UTC))
        return {"borrower_id": borrower}

    def programme(self, borrower: str) -> Params:
        """A's: the programme of its own core enterprise's chain; B's: one of a chain A is not in."""
        core = CORE
        if borrower == B:
            core = self.unique("core-other")
            self.conn.execute("INSERT INTO borrowers (borrower_id, tenant, name, role) VALUES"
                              " (%s, 'acme', 'Other Core', 'core')", (core,))
        programme_id = self.unique(f"prog-{borrower}")
        financing.create_programme(self.conn, programme_id, core, "CNY", 1e9, 0.8, "officer",
                                   datetime.now(UTC))
        return {"programme_id": programme_id}

    def payable(self, borrower: str) -> Params:
        """A receivable of the borrower's facility owed by the core enterprise, not confirmed."""
        if not self.conn.execute("SELECT 1 FROM programmes WHERE core_id = %s",
                                 (CORE,)).fetchone():
            self.programme(A)
        receivable_id = self.unique(f"ar-{borrower}")
        service.insert_receivable(self.conn, receivable_id, FAC[borrower], "Example Flour Mill",
                                  1000.0, datetime.now(UTC) + timedelta(days=30), verified=False,
                                  posted_by="enterprise", debtor_id=CORE)
        return {"receivable_id": receivable_id}

    def voucher(self, borrower: str) -> Params:
        """A voucher the borrower holds: the core enterprise confirmed its receivable."""
        receivable = self.payable(borrower)["receivable_id"]
        row = financing.confirm_receivable(self.conn, receivable, debtor_scope=None, by="officer",
                                           now=datetime.now(UTC))
        return {"voucher_id": row["voucher_id"]}

    def ledger_entry(self, borrower: str) -> Params:
        """An entry of the ledger concerning the borrower (a repayment), under a signed head."""
        row = self.conn.execute("INSERT INTO repayments (facility_id, amount) VALUES (%s, 1)"
                                " RETURNING id", (FAC[borrower],)).fetchone()
        assert row is not None
        drain(self.conn, LEDGER_SIGNER)
        found = ledger_store.entries(self.conn, None, 1, 0, table="repayments", key=str(row[0]))
        return {"leaf_index": str(found[0]["leaf_index"])}

    def lot_ledger_entry(self, borrower: str) -> Params:
        """An entry of the ledger concerning the borrower's lot and its warehouse operator (a
        release order), under a signed head."""
        release_id = self.release(borrower)["release_id"]
        drain(self.conn, LEDGER_SIGNER)
        found = ledger_store.entries(self.conn, None, 1, 0, table="release_orders",
                                     key=release_id)
        return {"leaf_index": str(found[0]["leaf_index"])}

    def statement(self, borrower: str) -> Params:
        """A reconciled statement of the borrower's loan account (one line nothing explains)."""
        body = (f"reference,facility_id,amount,currency,direction,value_date\n"
                f"{self.unique('bank-ref')},{FAC[borrower]},1.00,CNY,debit,2026-11-30\n").encode()
        kind, lines = statement_file.parse_statement(body)
        row = reconciliation.import_statement(self.conn, body, kind, lines, source="matrix",
                                              by="officer", now=datetime.now(UTC))
        return {"import_id": str(row["id"])}

    def api_key(self, borrower: str) -> Params:
        _key, row = issue_api_key(self.conn, borrower, self.unique("spare"), "admin")
        return {"key_id": row["key_id"]}


def one(query: str) -> Callable[[psycopg.Connection, Params], Any]:
    """A state probe: the rows ``query`` (with the path parameters) returns."""
    def probe(conn: psycopg.Connection, params: Params) -> Any:
        return conn.execute(query, params).fetchall()
    return probe


ALERT_STATE = one("SELECT status, acknowledged_by, resolved_by, comment FROM alerts"
                  " WHERE id = %(alert_id)s::bigint")
RELEASE_STATE = one("SELECT r.status, r.approved_at, r.executed_at, l.declared_quantity"
                    " FROM release_orders r JOIN lots l USING (lot_id)"
                    " WHERE release_id = %(release_id)s")
DEVICE_STATE = one("SELECT enabled, credentials_hash FROM devices WHERE device_id = %(device_id)s")
USER_STATE = one("SELECT disabled, password_hash FROM users WHERE username = %(username)s")
KEY_STATE = one("SELECT revoked_at FROM api_keys WHERE key_id = %(key_id)s")
RECEIVABLE_STATE = one("SELECT verified, verified_by FROM receivables"
                       " WHERE receivable_id = %(receivable_id)s")
INSPECTION_STATE = one("SELECT count(*) FROM inspections WHERE lot_id = %(lot_id)s")
DRAWDOWN_STATE = one("SELECT status, decided_by FROM drawdowns WHERE drawdown_id = %(drawdown_id)s")
BLACKLIST_STATE = one("SELECT removed_at FROM blacklist WHERE borrower_id = %(borrower_id)s")
CONFIRM_STATE = one("SELECT confirmed_at, (SELECT count(*) FROM vouchers v WHERE v.receivable_id ="
                    " r.receivable_id) FROM receivables r WHERE receivable_id = %(receivable_id)s")
VOUCHER_STATE = one("SELECT status, financed_amount, (SELECT count(*) FROM vouchers c WHERE"
                    " c.parent_id = v.voucher_id), (SELECT count(*) FROM voucher_payments p WHERE"
                    " p.root_id = v.voucher_id) FROM vouchers v WHERE voucher_id = %(voucher_id)s")
WEBHOOK_STATE = one("SELECT active, deactivated_at, (SELECT count(*) FROM webhook_deliveries"
                    " WHERE webhook_id = w.id) FROM webhooks w WHERE id = %(webhook_id)s::bigint")


@dataclass(frozen=True)
class Row:
    access: Access
    arrange: Callable[[Ctx, str], Params]  # an object of borrower A or B for this route
    fake: Params  # path parameters that name nothing
    ok: int = 200  # what an allowed caller gets on a good object
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    state: Callable[[psycopg.Connection, Params], Any] | None = None  # for routes that write
    operator: OperatorAccess = "refused"
    # the objects a warehouse operator is tested on, when not ``arrange``'s
    operator_arrange: Callable[[Ctx, str], Params] | None = None


def fixed(**params: Callable[[str], str]) -> Callable[[Ctx, str], Params]:
    return lambda _ctx, borrower: {k: f(borrower) for k, f in params.items()}


FACILITY = fixed(facility_id=FAC.__getitem__)
LOT_ID = fixed(lot_id=LOT.__getitem__)
DEVICE_ID = fixed(device_id=DEVICE.__getitem__)
NO_FACILITY = {"facility_id": "fac-made-up"}
NO_ALERT = {"alert_id": "987654321"}
NO_RELEASE = {"release_id": "rel-made-up"}
NO_DEVICE = {"device_id": "dev-made-up"}
NO_LOT = {"lot_id": "lot-made-up"}
NO_WEBHOOK = {"webhook_id": "987654321"}
NO_DRAWDOWN = {"drawdown_id": "dd-made-up"}
NO_PROGRAMME = {"programme_id": "prog-made-up"}
NO_VOUCHER = {"voucher_id": "v-made-up"}

MATRIX: dict[tuple[str, str], Row] = {
    ("PATCH", "/users/{username}"): Row(
        "admin", fixed(username=lambda _b: "officer"), {"username": "nobody-here"},
        body={"disabled": False}, state=USER_STATE),
    ("DELETE", "/api-keys/{key_id}"): Row(
        "admin", Ctx.api_key, {"key_id": "made-up-key"}, state=KEY_STATE),
    ("GET", "/facilities/{facility_id}"): Row("read", FACILITY, NO_FACILITY),
    ("GET", "/facilities/{facility_id}/limit"): Row("read", FACILITY, NO_FACILITY),
    ("GET", "/facilities/{facility_id}/limits"): Row("read", FACILITY, NO_FACILITY),
    ("GET", "/facilities/{facility_id}/limits/{snapshot_id}"): Row(
        "read", Ctx.snapshot, {"facility_id": "fac-made-up", "snapshot_id": "987654321"}),
    ("GET", "/alerts/{alert_id}"): Row("read", Ctx.alert, NO_ALERT),
    ("POST", "/alerts/{alert_id}/acknowledge"): Row(
        "bank", Ctx.alert, NO_ALERT, state=ALERT_STATE),
    ("POST", "/alerts/{alert_id}/resolve"): Row(
        "bank", Ctx.alert, NO_ALERT, body={"comment": "checked on site"}, state=ALERT_STATE),
    ("GET", "/borrowers/{borrower_id}"): Row(
        "read", fixed(borrower_id=lambda b: b), {"borrower_id": "sup-made-up"}),
    ("GET", "/borrowers/{borrower_id}/rating"): Row(
        "read", fixed(borrower_id=lambda b: b), {"borrower_id": "sup-made-up"}),
    ("GET", "/lots/{lot_id}"): Row("read", LOT_ID, NO_LOT, operator="read"),
    ("GET", "/lots/{lot_id}/inspections"): Row("read", LOT_ID, NO_LOT),
    ("POST", "/lots/{lot_id}/inspections"): Row(
        "bank", LOT_ID, NO_LOT, ok=201, body={"counted_quantity": 10, "note": "matrix"},
        state=INSPECTION_STATE),
    ("GET", "/devices/{device_id}"): Row("read", DEVICE_ID, NO_DEVICE),
    ("POST", "/devices/{device_id}/rotate"): Row("admin", DEVICE_ID, NO_DEVICE, state=DEVICE_STATE),
    ("POST", "/devices/{device_id}/disable"): Row(
        "admin", DEVICE_ID, NO_DEVICE, state=DEVICE_STATE),
    ("POST", "/devices/{device_id}/enable"): Row("admin", DEVICE_ID, NO_DEVICE, state=DEVICE_STATE),
    ("GET", "/telemetry/devices/{device_id}/latest"): Row("read", DEVICE_ID, NO_DEVICE),
    ("GET", "/telemetry/devices/{device_id}/series"): Row(
        "read", DEVICE_ID, NO_DEVICE, query={"metric": "weight_kg"}),
    ("GET", "/telemetry/lots/{lot_id}/series"): Row(
        "read", LOT_ID, NO_LOT, query={"metric": "weight_kg"}),
    ("GET", "/releases/{release_id}"): Row("read", Ctx.release, NO_RELEASE),
    ("POST", "/releases/{release_id}/approve"): Row(
        "bank", Ctx.release, NO_RELEASE, state=RELEASE_STATE),
    ("POST", "/releases/{release_id}/execute"): Row(
        "bank", lambda ctx, b: ctx.release(b, approved=True), NO_RELEASE, state=RELEASE_STATE),
    ("POST", "/releases/{release_id}/reject"): Row(
        "bank", Ctx.release, NO_RELEASE, state=RELEASE_STATE),
    ("POST", "/receivables/{receivable_id}/verify"): Row(
        "bank", Ctx.receivable, {"receivable_id": "ar-made-up"}, state=RECEIVABLE_STATE),
    ("GET", "/drawdowns/{drawdown_id}"): Row("read", Ctx.drawdown, NO_DRAWDOWN),
    ("POST", "/drawdowns/{drawdown_id}/approve"): Row(
        "bank", Ctx.drawdown, NO_DRAWDOWN, state=DRAWDOWN_STATE),
    ("POST", "/drawdowns/{drawdown_id}/reject"): Row(
        "bank", Ctx.drawdown, NO_DRAWDOWN, body={"comment": "no"}, state=DRAWDOWN_STATE),
    ("DELETE", "/blacklist/{borrower_id}"): Row(
        "bank", Ctx.blacklisted, {"borrower_id": "sup-made-up"}, state=BLACKLIST_STATE),
    ("GET", "/programmes/{programme_id}"): Row("read", Ctx.programme, NO_PROGRAMME),
    ("GET", "/programmes/{programme_id}/chain"): Row("read", Ctx.programme, NO_PROGRAMME),
    ("POST", "/receivables/{receivable_id}/confirm"): Row(
        "debtor", Ctx.payable, {"receivable_id": "ar-made-up"}, ok=201, state=CONFIRM_STATE),
    ("GET", "/vouchers/{voucher_id}"): Row("read", Ctx.voucher, NO_VOUCHER),
    ("POST", "/vouchers/{voucher_id}/transfer"): Row(
        "holder", Ctx.voucher, NO_VOUCHER, ok=201, body={"to": B, "amount": 1},
        state=VOUCHER_STATE),
    ("POST", "/vouchers/{voucher_id}/finance"): Row(
        "holder", Ctx.voucher, NO_VOUCHER, state=VOUCHER_STATE),
    ("POST", "/vouchers/{voucher_id}/pay"): Row(
        "debtor", Ctx.voucher, NO_VOUCHER, ok=201, body={"amount": 1000}, state=VOUCHER_STATE),
    ("GET", "/ledger/entries/{leaf_index}"): Row(
        "read", Ctx.ledger_entry, {"leaf_index": "987654321"}, operator="read",
        operator_arrange=Ctx.lot_ledger_entry),
    ("GET", "/reconciliation/statements/{import_id}"): Row(
        "bank", Ctx.statement, {"import_id": "987654321"}),
    ("GET", "/webhooks/{webhook_id}"): Row("bank", Ctx.webhook, NO_WEBHOOK),
    ("DELETE", "/webhooks/{webhook_id}"): Row(
        "bank", Ctx.webhook, NO_WEBHOOK, state=WEBHOOK_STATE),
    ("GET", "/webhooks/{webhook_id}/deliveries"): Row("bank", Ctx.webhook, NO_WEBHOOK),
    ("POST", "/webhooks/{webhook_id}/test"): Row(
        "bank", Ctx.webhook, NO_WEBHOOK, ok=202, state=WEBHOOK_STATE),
}


def routes_with_ids(client: TestClient) -> set[tuple[str, str]]:
    """(method, path under /api/v1) of every route that takes a path parameter. Static file mounts
    (the dashboard and its vendored libraries) take a file path, not an object id: left out."""
    found = set()
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, Mount) or not getattr(context, "param_convertors", None):
            continue
        assert isinstance(route, APIRoute), f"{context.path}: not an API route"
        path = context.path or ""
        assert path.startswith(V1), f"{path}: a route with an id outside {V1}"
        for method in context.methods or ():
            if method != "HEAD":
                found.add((method, path.removeprefix(V1)))
    return found


def test_every_route_with_an_id_is_in_the_matrix(api: TestClient) -> None:
    routes = routes_with_ids(api)
    missing = sorted(routes - MATRIX.keys())
    assert not missing, f"routes with an id but no row in MATRIX (add one): {missing}"
    stale = sorted(MATRIX.keys() - routes)
    assert not stale, f"rows in MATRIX for routes that no longer exist: {stale}"


def call(client: TestClient, key: tuple[str, str], row: Row, params: Params,
         headers: dict[str, str]) -> Any:
    url = V1 + key[1].format(**params)
    return client.request(key[0], url, params=row.query, json=row.body, headers=headers)


def shape(response: Any, params: Params) -> tuple[int, str, dict[str, Any]]:
    """Status, content type and the problem body with the ids themselves blanked out."""
    body = dict(response.json())
    for value in params.values():
        pattern = rf"(?<![\w.-]){re.escape(value)}(?![\w.-])"
        for name in ("detail", "instance"):
            if isinstance(body.get(name), str):
                body[name] = re.sub(pattern, "<id>", body[name])
    return response.status_code, response.headers["content-type"], body


def test_enterprise_a_learns_nothing_about_b_and_changes_nothing(
        api: TestClient, world: World, as_a: dict[str, str]) -> None:
    failures: list[str] = []
    with world.connect() as conn:
        ctx = Ctx(world, conn)
        for key, row in MATRIX.items():
            theirs = row.arrange(ctx, B)
            before = row.state(conn, theirs) if row.state else None
            real = call(api, key, row, theirs, as_a)
            made_up = call(api, key, row, row.fake, as_a)
            expected = 404 if row.access in NOT_VISIBLE else 403
            if real.status_code != expected:
                failures.append(f"{key}: A on B's object got {real.status_code}, not {expected}: "
                                f"{real.text}")
                continue
            if real.headers["content-type"] != MEDIA_TYPE:
                failures.append(f"{key}: {real.headers['content-type']} is not {MEDIA_TYPE}")
            if shape(real, theirs) != shape(made_up, row.fake):
                failures.append(f"{key}: B's object and a made-up one answer differently:\n"
                                f"  {shape(real, theirs)}\n  {shape(made_up, row.fake)}")
            if row.state and row.state(conn, theirs) != before:
                failures.append(f"{key}: A changed B's object")
    assert not failures, "\n".join(failures)


def test_enterprise_a_reads_its_own_objects_and_cannot_act_on_them(
        api: TestClient, world: World, as_a: dict[str, str]) -> None:
    failures: list[str] = []
    with world.connect() as conn:
        ctx = Ctx(world, conn)
        for key, row in MATRIX.items():
            mine = row.arrange(ctx, A)
            before = row.state(conn, mine) if row.state else None
            response = call(api, key, row, mine, as_a)
            expected = {"read": row.ok, "holder": row.ok, "debtor": 404}.get(row.access, 403)
            if response.status_code != expected:
                failures.append(f"{key}: A on its own object got {response.status_code}, not "
                                f"{expected}: {response.text}")
            if (row.access not in ("read", "holder") and row.state
                    and row.state(conn, mine) != before):
                failures.append(f"{key}: A changed its own object on a route it may not use")
    assert not failures, "\n".join(failures)


def test_officer_reads_and_acts_on_every_borrower_and_admin_routes_refuse_officers(
        api: TestClient, world: World, as_officer: dict[str, str], as_admin: dict[str, str],
        as_b: dict[str, str]) -> None:
    failures: list[str] = []
    with world.connect() as conn:
        ctx = Ctx(world, conn)
        for key, row in MATRIX.items():
            for borrower in (A, B):
                params = row.arrange(ctx, borrower)
                before = row.state(conn, params) if row.state else None
                response = call(api, key, row, params, as_officer)
                expected = 403 if row.access in ("admin", "holder") else row.ok
                if response.status_code != expected:
                    failures.append(f"{key} on {borrower}'s object: the officer got "
                                    f"{response.status_code}, not {expected}: {response.text}")
                if row.access in ("admin", "holder"):
                    if row.state and row.state(conn, params) != before:
                        failures.append(f"{key}: an officer changed an admin-only object")
                    admin = call(api, key, row, params, as_admin)
                    if admin.status_code != (403 if row.access == "holder" else row.ok):
                        failures.append(f"{key}: the admin got {admin.status_code}: {admin.text}")
                missing = call(api, key, row, row.fake, as_officer)
                if missing.status_code != (403 if row.access in ("admin", "holder") else 404):
                    failures.append(f"{key}: a made-up id gave the officer {missing.status_code}")
    # B itself still works: nothing above touched its key.
    assert api.get(f"{V1}/auth/me", headers=as_b).status_code == 200
    assert not failures, "\n".join(failures)


def test_an_operator_reads_what_it_stores_and_is_refused_everything_else(
        api: TestClient, world: World, as_op_a: dict[str, str]) -> None:
    """The operator of A's lot: on routes it may read, A's lot's objects answer and B's (another
    operator's) answer exactly like made-up ones; on every other route, 403 for A's, B's and
    made-up objects alike, and nothing changes."""
    failures: list[str] = []
    with world.connect() as conn:
        ctx = Ctx(world, conn)
        for key, row in MATRIX.items():
            arrange = row.operator_arrange or row.arrange
            mine, theirs = arrange(ctx, A), arrange(ctx, B)
            before = [row.state(conn, p) for p in (mine, theirs)] if row.state else None
            got_mine = call(api, key, row, mine, as_op_a)
            got_theirs = call(api, key, row, theirs, as_op_a)
            made_up = call(api, key, row, row.fake, as_op_a)
            expected = (row.ok, 404) if row.operator == "read" else (403, 403)
            if (got_mine.status_code, got_theirs.status_code) != expected:
                failures.append(f"{key}: the operator got {got_mine.status_code} on A's lot's "
                                f"object and {got_theirs.status_code} on B's, not {expected}: "
                                f"{got_theirs.text}")
                continue
            if shape(got_theirs, theirs) != shape(made_up, row.fake):
                failures.append(f"{key}: B's object and a made-up one answer the operator "
                                f"differently:\n  {shape(got_theirs, theirs)}\n  "
                                f"{shape(made_up, row.fake)}")
            if row.state and [row.state(conn, p) for p in (mine, theirs)] != before:
                failures.append(f"{key}: the operator changed an object")
    assert not failures, "\n".join(failures)


def test_admin_only_routes_refuse_officers_and_enterprises(
        api: TestClient, as_officer: dict[str, str], as_a: dict[str, str]) -> None:
    """The admin-only routes without an id (covered above for those with one)."""
    calls = [("GET", "/users", None), ("POST", "/users", {"username": "mallory", "password":
                                                           "x" * 20, "role": "admin"}),
             ("GET", "/api-keys", None), ("POST", "/api-keys", {"borrower_id": B, "name": "x"}),
             ("POST", "/devices", {"device_id": "dev-evil", "tenant": "acme"})]
    for method, path, body in calls:
        for who in (as_officer, as_a):
            r = api.request(method, V1 + path, json=body, headers=who)
            assert r.status_code == 403, (method, path, r.text)
            assert r.headers["content-type"] == MEDIA_TYPE


def test_bank_only_routes_without_an_id_refuse_enterprises(
        api: TestClient, world: World, as_a: dict[str, str]) -> None:
    price = [{"commodity": "wheat", "time": "2026-03-01T00:00:00Z", "price": 1.0}]
    csv_upload = b"time,commodity,price,currency\n2026-03-01T00:00:00Z,wheat,1,CNY\n"
    for r in [api.post(f"{V1}/prices", json=price, headers=as_a),
              api.post(f"{V1}/prices/csv", content=csv_upload,
                       headers={**as_a, "Content-Type": "text/csv"}),
              api.get(f"{V1}/webhooks", headers=as_a),
              api.post(f"{V1}/webhooks", json={"url": "https://x.test/"}, headers=as_a)]:
        assert r.status_code == 403, (r.url, r.text)
        assert r.headers["content-type"] == MEDIA_TYPE
    with world.connect() as conn:
        assert conn.execute("SELECT count(*) FROM prices WHERE price = 1").fetchone() == (0,)


def test_ids_in_bodies_and_filters_are_scoped_too(
        api: TestClient, world: World, as_a: dict[str, str]) -> None:
    """A cannot request a release from, post sales or receivables to, or filter by B's objects:
    B's ids answer like made-up ones and nothing is stored."""
    with world.connect() as conn:
        before = conn.execute("SELECT (SELECT count(*) FROM release_orders),"
                              " (SELECT count(*) FROM sales),"
                              " (SELECT count(*) FROM receivables)").fetchone()
    cases: list[tuple[str, str, dict[str, Any]]] = [
            ("/releases", "lot_id", {"quantity": 1}),
            ("/sales", "facility_id", {"amount": 10}),
            ("/receivables", "facility_id", {"debtor": "x", "amount": 10,
                                             "due": "2030-01-01T00:00:00Z"})]
    for path, field_name, body in cases:
        theirs_id = LOT[B] if field_name == "lot_id" else FAC[B]
        theirs = api.post(V1 + path, json={**body, field_name: theirs_id}, headers=as_a)
        made_up = api.post(V1 + path, json={**body, field_name: "made-up"}, headers=as_a)
        assert theirs.status_code == made_up.status_code == 404, (path, theirs.text)
        assert (theirs.json()["detail"].replace(theirs_id, "<id>")
                == made_up.json()["detail"].replace("made-up", "<id>"))
    with world.connect() as conn:
        after = conn.execute("SELECT (SELECT count(*) FROM release_orders),"
                             " (SELECT count(*) FROM sales),"
                             " (SELECT count(*) FROM receivables)").fetchone()
    assert after == before
    for path, params in [("/lots", {"facility_id": FAC[B]}), ("/devices", {"lot_id": LOT[B]}),
                         ("/telemetry/latest", {"facility_id": FAC[B]}),
                         ("/releases", {"lot_id": LOT[B]}), ("/sales", {"facility_id": FAC[B]}),
                         ("/receivables", {"facility_id": FAC[B]}),
                         ("/facilities", {"borrower_id": B}), ("/alerts", {"facility_id": FAC[B]})]:
        r = api.get(V1 + path, params=params, headers=as_a)
        assert r.status_code == 200 and r.json()["items"] == [], (path, r.text)


# --- credentials --------------------------------------------------------------------------------

def assert_401(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    body = response.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized" and body["detail"]
    assert "WWW-Authenticate" in response.headers


ME = f"{V1}/auth/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_credentials_and_garbage_headers_are_401(api: TestClient) -> None:
    assert_401(api.get(ME))
    for headers in [{"Authorization": "Bearer"}, {"Authorization": "Bearer not-a-jwt"},
                    {"Authorization": "Basic b2ZmaWNlcjpwdw=="}, {"Authorization": "Bearer a.b.c"},
                    {"Authorization": "Bearer " + "x" * 10_000}, {"X-API-Key": ""},
                    {"X-API-Key": "pwk_nothing"}, {"X-API-Key": "x" * 10_000},
                    {"X-API-Key": "' OR 1=1 --"}, {"Authorization": "Bearer pwk_unknown"}]:
        assert_401(api.get(ME, headers=headers))
    # Routes of every resource refuse alike.
    for path in ["/lots", f"/lots/{LOT[A]}", "/devices", "/telemetry/latest", "/releases",
                 "/prices", "/sales", "/receivables", "/borrowers"]:
        assert_401(api.get(V1 + path))


def test_expired_token_is_401(api: TestClient) -> None:
    expired = issue_token(JWT_SECRET, "officer", Role.OFFICER, timedelta(minutes=5),
                          now=datetime.now(UTC) - timedelta(hours=2))
    r = api.get(ME, headers=bearer(expired))
    assert_401(r)
    assert "expired" in r.json()["detail"]


def test_forged_tokens_are_401(api: TestClient, as_officer: dict[str, str]) -> None:
    now = datetime.now(UTC)
    claims = {"sub": "admin", "role": "admin", "iss": ISSUER, "iat": int(now.timestamp()),
              "exp": int((now + timedelta(hours=1)).timestamp())}
    other_secret = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm=ALGORITHM)
    alg_none = jwt.encode(claims, "", algorithm="none")  # "" is no key, as None
    # An officer's real token with the payload changed to say admin (signature no longer fits).
    header, _payload, signature = as_officer["Authorization"].removeprefix("Bearer ").split(".")
    tampered_payload = jwt.utils.base64url_encode(
        json.dumps({**claims, "sub": "officer"}).encode()).decode()
    tampered = f"{header}.{tampered_payload}.{signature}"
    enterprise_role = jwt.encode({**claims, "role": "enterprise"}, JWT_SECRET, algorithm=ALGORITHM)
    for token in (other_secret, alg_none, tampered, enterprise_role):
        assert_401(api.get(ME, headers=bearer(token)))
        assert_401(api.get(f"{V1}/users", headers=bearer(token)))


def test_revoked_api_key_is_401(api: TestClient, world: World, as_admin: dict[str, str],
                                as_a: dict[str, str]) -> None:
    assert api.get(ME, headers=as_a).status_code == 200
    r = api.delete(f"{V1}/api-keys/{world.key_id[A]}", headers=as_admin)
    assert r.status_code == 200 and r.json()["revoked_at"], r.text
    assert_401(api.get(ME, headers=as_a))
    assert_401(api.get(f"{V1}/lots/{LOT[A]}", headers=as_a))
    assert_401(api.get(f"{V1}/lots/{LOT[A]}", headers={"Authorization": f"Bearer {world.key[A]}"}))


def test_disabled_users_token_is_401(api: TestClient, as_admin: dict[str, str],
                                     as_officer: dict[str, str]) -> None:
    assert api.get(ME, headers=as_officer).status_code == 200
    r = api.patch(f"{V1}/users/officer", json={"disabled": True}, headers=as_admin)
    assert r.status_code == 200, r.text
    assert_401(api.get(ME, headers=as_officer))
    assert_401(api.get(f"{V1}/lots", headers=as_officer))
    assert api.post(f"{V1}/auth/token", data={"username": "officer", "password": "x"}
                    ).status_code == 401
    with pytest.raises(AssertionError):
        login(api, "officer")
