"""The lending service and engine against a real PostgreSQL: load a portfolio, land readings,
recompute, and check the limit, the stored snapshot, duplicate-pledge refusal, releases,
repayments, prices, alerts and NOTIFY. No broker: readings are inserted directly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import lending.operations as service
from lending.domain.alerts import AlertStatus, AlertType, Severity
from lending.domain.model import PricePoint, ReleaseStatus
from lending.engine import LendingEngine
from lending.financing import repay as post_repayment
from lending.operations import (
    DuplicatePledgeError,
    LendingError,
    acknowledge_alert,
    advance_release,
    list_alerts,
    load_portfolio,
    post_prices,
    request_release,
    resolve_alert,
)
from lending.portfolio_file import PortfolioIn

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
TENANT = "acme"
TERMS = {"advance_rate": 0.6, "base_haircut": 0.1, "warning_ltv": 0.7, "liquidation_ltv": 0.85}
WHEAT_LIQUIDATION_DAYS = 20.0
FIRST_PRICE_TIME = NOW - timedelta(days=1)


def repay(conn: psycopg.Connection, facility_id: str, amount: float, now: datetime) -> float:
    """Post a repayment; the facility's derived outstanding after it."""
    return float(post_repayment(conn, facility_id, amount, now)["outstanding"])


def portfolio_data() -> dict[str, Any]:
    """Two facilities: fac-a (wheat, weighed and counted) and fac-b (copper, weighed, plus a
    receivable), one price each, so every number below can be worked out by hand."""
    return {
        "commodities": [
            {"name": "wheat", "unit": "t", "unit_kg": 1000, "liquidation_days": 20},
            {"name": "copper", "unit": "t", "unit_kg": 1000, "liquidation_days": 5},
        ],
        "borrowers": [
            {"id": "b-a", "name": "Borrower A", "tenant": TENANT, "role": "supplier"},
            {"id": "b-b", "name": "Borrower B", "tenant": TENANT, "role": "distributor"},
        ],
        "facilities": [
            {"id": "fac-a", "borrower": "b-a", "line": 500_000, "outstanding": 100_000,
             "terms": TERMS},
            {"id": "fac-b", "borrower": "b-b", "line": 300_000, "outstanding": 0,
             "terms": TERMS},
        ],
        "lots": [
            {"id": "lot-a1", "facility": "fac-a", "commodity": "wheat", "declared_quantity": 100,
             "unit_weight_kg": 1000, "registration_no": "REG-A1", "sensors": ["lc-a1", "rf-a1"],
             "business_hours": [0, 24]},
            {"id": "lot-b1", "facility": "fac-b", "commodity": "copper", "declared_quantity": 10,
             "unit_weight_kg": 1000, "registration_no": "REG-B1", "sensors": ["lc-b1"],
             "business_hours": [0, 24]},
        ],
        "receivables": [
            {"id": "ar-b1", "facility": "fac-b", "debtor": "core", "amount": 100_000,
             "due": NOW + timedelta(days=30)},
        ],
        "prices": [
            {"commodity": "wheat", "time": FIRST_PRICE_TIME, "price": 3_000},
            {"commodity": "copper", "time": NOW - timedelta(days=1), "price": 70_000},
        ],
    }


def portfolio(data: dict[str, Any] | None = None) -> PortfolioIn:
    return PortfolioIn.model_validate(data or portfolio_data())


@pytest.fixture
def db(migrated_db: str) -> str:
    return migrated_db


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db, autocommit=True) as c:
        yield c


@pytest.fixture
def engine(db: str) -> Iterator[LendingEngine]:
    e = LendingEngine(db, clock=lambda: NOW)
    yield e
    e.close()


def add_readings(conn: psycopg.Connection, device: str, metric: str, values: list[float],
                 last: datetime = NOW - timedelta(minutes=1)) -> None:
    """``values`` one minute apart ending at ``last``, and the device online and just seen."""
    start = last - timedelta(minutes=len(values) - 1)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, device_id, metric, value, boot, seq, received_at)"
            " VALUES (%s, %s, %s, %s, 1, %s, %s)",
            [(start + timedelta(minutes=i), device, metric, v, i, NOW)
             for i, v in enumerate(values)])
        cur.execute(
            "INSERT INTO device_status (device_id, tenant, online, last_seen, changed_at)"
            " VALUES (%s, %s, true, %s, %s) ON CONFLICT (device_id) DO UPDATE"
            " SET online = true, last_seen = EXCLUDED.last_seen",
            (device, TENANT, last, NOW))


def land_healthy_readings(conn: psycopg.Connection) -> None:
    add_readings(conn, "lc-a1", "weight_kg", [100_000.0, 100_002.0, 99_999.0, 100_001.0, 100_000.0])
    add_readings(conn, "rf-a1", "rfid_count", [100.0] * 5)
    add_readings(conn, "lc-b1", "weight_kg", [10_000.0, 10_001.0, 9_999.0, 10_000.0, 10_000.0])


@pytest.fixture
def loaded(conn: psycopg.Connection) -> psycopg.Connection:
    result = load_portfolio(conn, portfolio(), NOW)
    assert (result.commodities, result.borrowers, result.facilities, result.lots,
            result.receivables, result.prices) == (2, 2, 2, 2, 1, 2)
    land_healthy_readings(conn)
    return conn


def by_id(assessments: list[Any]) -> dict[str, Any]:
    return {a.snapshot.facility_id: a for a in assessments}


def latest_snapshot_row(conn: psycopg.Connection, facility_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM limit_snapshots WHERE facility_id = %s"
                          " ORDER BY time DESC, id DESC LIMIT 1", (facility_id,)).fetchone()
    assert row is not None, f"no snapshot for {facility_id}"
    return row


def counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = ("commodities", "borrowers", "facilities", "lots", "lot_sensors", "receivables",
              "prices")
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in tables}


def declared(conn: psycopg.Connection, lot_id: str) -> float:
    row = conn.execute("SELECT declared_quantity FROM lots WHERE lot_id = %s", (lot_id,)).fetchone()
    assert row is not None
    return float(row[0])


# --- limit, LTV, snapshot --------------------------------------------------------------------------

def test_recompute_gives_the_limit_ltv_and_a_snapshot_with_its_inputs(
        loaded: psycopg.Connection, engine: LendingEngine) -> None:
    results = by_id(engine.recompute(["fac-a", "fac-b"]))
    assert set(results) == {"fac-a", "fac-b"}

    # fac-a: 100 t of wheat (weight and count agree, fresh, online) × 3000 × (1 − 10 %) = 270,000;
    # × 60 % advance × trust 1 = 162,000 < line 500,000. LTV = 100,000 / 270,000.
    a = results["fac-a"].snapshot
    (line,) = a.lots
    assert line.verified == pytest.approx(100.0, abs=0.05)
    assert line.pledged == pytest.approx(100.0)
    assert line.trust == 1.0 and line.trust_factors == {}
    assert (line.price, line.haircut, line.units_per_quote) == (3_000, pytest.approx(0.1), 1.0)
    assert a.collateral_value == pytest.approx(270_000)
    assert a.limit == pytest.approx(162_000)
    assert a.available == pytest.approx(62_000)
    assert a.ltv == pytest.approx(100_000 / 270_000)
    assert a.binding == "borrowing base"

    # fac-b: 10 t copper × 70,000 × 0.9 = 630,000 → × 0.6 = 378,000; + receivable 100,000 × 80 %;
    # the line (300,000) binds.
    b = results["fac-b"].snapshot
    assert b.collateral_value == pytest.approx(630_000)
    assert b.eligible_receivables == pytest.approx(100_000)
    assert b.borrowing_base == pytest.approx(378_000 + 80_000)
    assert (b.limit, b.available, b.ltv, b.binding) == (300_000, 300_000, 0.0, "line")

    # Nothing is wrong, so nothing is alerted.
    assert list_alerts(loaded, include_resolved=True) == []

    row = latest_snapshot_row(loaded, "fac-a")
    assert float(row["credit_limit"]) == pytest.approx(162_000)
    assert float(row["available"]) == pytest.approx(62_000)
    assert float(row["outstanding"]) == 100_000
    assert float(row["collateral_value"]) == pytest.approx(270_000)
    assert row["ltv"] == pytest.approx(100_000 / 270_000)
    assert row["reasons"] == ["first assessment"]
    inputs = row["inputs"]
    assert inputs["facility_id"] == "fac-a" and inputs["currency"] == "CNY"
    assert inputs["line"] == 500_000 and inputs["reserves"] == 0
    (stored,) = inputs["lots"]
    assert stored["lot_id"] == "lot-a1" and stored["commodity"] == "wheat"
    assert stored["price"] == 3_000 and stored["price_time"] is not None
    assert stored["haircut"] == pytest.approx(0.1)
    assert stored["advance_rate"] == 0.6 and stored["trust"] == 1.0
    assert stored["declared"] == 100 and stored["verified"] == pytest.approx(100, abs=0.05)
    assert stored["contribution"] == pytest.approx(162_000)

    # Recomputing with nothing new stores no new snapshot (the limit did not move).
    engine.recompute(["fac-a"])
    assert loaded.execute("SELECT count(*) FROM limit_snapshots WHERE facility_id = 'fac-a'"
                          ).fetchone() == (1,)


def test_an_unknown_facility_is_simply_not_assessed(loaded: psycopg.Connection,
                                                    engine: LendingEngine) -> None:
    assert engine.recompute(["no-such-facility"]) == []


# --- duplicate pledges -----------------------------------------------------------------------------

def attempt(lot: dict[str, Any]) -> PortfolioIn:
    """Another borrower's portfolio (new facility fac-c, new commodity) claiming ``lot``."""
    return portfolio({
        "commodities": [{"name": "nickel"}],
        "borrowers": [{"id": "b-c", "name": "Borrower C", "tenant": "other"}],
        "facilities": [{"id": "fac-c", "borrower": "b-c", "line": 1_000_000}],
        "lots": [{"facility": "fac-c", "commodity": "nickel", "declared_quantity": 100,
                  "unit_weight_kg": 1000, **lot}],
        "prices": [{"commodity": "nickel", "time": NOW, "price": 130_000}],
    })


CLAIMS = {
    "registration number": {"id": "lot-c1", "registration_no": "REG-A1", "sensors": ["lc-c1"]},
    "sensor lc-a1": {"id": "lot-c2", "registration_no": "REG-C2", "sensors": ["lc-a1"]},
    "lot id": {"id": "lot-a1", "registration_no": "REG-C3", "sensors": ["lc-c3"]},
}


def test_a_duplicate_pledge_is_refused_writes_nothing_and_alerts_the_holder(
        loaded: psycopg.Connection) -> None:
    before = counts(loaded)
    for what, lot in CLAIMS.items():
        with pytest.raises(DuplicatePledgeError) as info:
            load_portfolio(loaded, attempt(lot), NOW)
        (conflict,) = info.value.conflicts
        assert conflict.what == what
        assert (conflict.existing.id, conflict.existing.facility_id) == ("lot-a1", "fac-a")
        assert (conflict.lot.id, conflict.lot.facility_id) == (lot["id"], "fac-c")
        assert "lot-a1" in str(info.value) and "fac-a" in str(info.value)
        assert counts(loaded) == before, f"{what}: a refused portfolio wrote something"
    assert loaded.execute("SELECT facility_id, declared_quantity, commodity FROM lots"
                          " WHERE lot_id = 'lot-a1'").fetchone() == ("fac-a", 100, "wheat")
    assert sorted(loaded.execute("SELECT device_id FROM lot_sensors WHERE lot_id = 'lot-a1'"
                                 ).fetchall()) == [("lc-a1",), ("rf-a1",)]

    (alert,) = list_alerts(loaded)
    assert alert.type is AlertType.DUPLICATE_PLEDGE and alert.severity is Severity.CRITICAL
    assert (alert.facility_id, alert.lot_id, alert.status) == ("fac-a", "lot-a1", AlertStatus.OPEN)
    assert not alert.auto_resolve
    attempted = alert.evidence["attempted"]
    assert attempted[0]["lot"] == "lot-c1" and attempted[0]["facility"] == "fac-c"
    assert attempted[0]["registration_no"] == "REG-A1"
    assert list_alerts(loaded, facility_id="fac-b") == []

    # Re-stating a lot for the facility that holds it is an update, not a duplicate.
    again = portfolio_data()
    again["lots"][0]["declared_quantity"] = 90
    load_portfolio(loaded, portfolio(again), NOW)
    assert declared(loaded, "lot-a1") == 90


def test_two_lots_in_one_file_claiming_the_same_goods_are_refused(conn: psycopg.Connection) -> None:
    data = portfolio_data()
    data["lots"][1]["registration_no"] = "REG-A1"  # fac-b's lot claims fac-a's registration
    with pytest.raises(DuplicatePledgeError):
        load_portfolio(conn, portfolio(data), NOW)
    assert counts(conn) == dict.fromkeys(counts(conn), 0)
    assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (0,)  # no facility to alert


@pytest.mark.parametrize(("statement", "params"), [
    (("INSERT INTO lots (lot_id, facility_id, commodity, declared_quantity, unit_weight_kg,"
     " registration_no) VALUES ('lot-x', 'fac-b', 'copper', 1, 1000, 'REG-A1')"), None),
    (("INSERT INTO lots (lot_id, facility_id, commodity, declared_quantity, unit_weight_kg,"
     " registration_no) VALUES ('lot-a1', 'fac-b', 'copper', 1, 1000, 'REG-X')"), None),
    ("INSERT INTO lot_sensors (device_id, lot_id) VALUES ('lc-a1', 'lot-b1')", None),
], ids=["registration-number", "lot-id", "sensor"])
def test_the_database_refuses_a_direct_duplicate(loaded: psycopg.Connection, statement: str,
                                                 params: None) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation):
        loaded.execute(statement, params)
    assert loaded.execute("SELECT facility_id FROM lots WHERE lot_id = 'lot-a1'").fetchone() == (
        "fac-a",)
    assert loaded.execute("SELECT lot_id FROM lot_sensors WHERE device_id = 'lc-a1'").fetchone() == (
        "lot-a1",)


def test_a_pledge_committed_between_the_check_and_the_write_is_still_refused(
        loaded: psycopg.Connection, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two loads race: B pledges lot-x to fac-b after A checked for duplicates but before A wrote.
    A must not then take over B's lot (the check and the write belong in one locked
    transaction)."""
    a = portfolio({
        "facilities": [{"id": "fac-a", "borrower": "b-a", "line": 500_000,
                        "outstanding": 100_000, "terms": TERMS}],
        "lots": [{"id": "lot-x", "facility": "fac-a", "commodity": "wheat",
                  "declared_quantity": 500, "unit_weight_kg": 1000, "registration_no": "REG-XA",
                  "sensors": ["lc-xa"]}],
    })
    b = portfolio({"lots": [{"id": "lot-x", "facility": "fac-b", "commodity": "copper",
                             "declared_quantity": 5, "unit_weight_kg": 1000,
                             "registration_no": "REG-XB", "sensors": ["lc-xb"]}]})
    real_terms_json = service.terms_json  # type: ignore[attr-defined]
    b_outcome: list[str] = []

    def terms_json_after_b_commits(terms: Any) -> Any:
        # Called inside A's write phase, after A's duplicate check. B gets 2 s for the lock: a
        # load that holds its lock from check to write makes B wait (serialised, no race).
        if not b_outcome:
            try:
                with psycopg.connect(db, autocommit=True,
                                     options="-c lock_timeout=2000") as other:
                    load_portfolio(other, b, NOW)
                b_outcome.append("committed")
            except psycopg.errors.LockNotAvailable:
                b_outcome.append("waited")
        return real_terms_json(terms)

    monkeypatch.setattr(service, "terms_json", terms_json_after_b_commits)
    refused: LendingError | None = None
    try:
        load_portfolio(loaded, a, NOW)
    except LendingError as exc:
        refused = exc
    assert b_outcome, "the hook did not run inside load_portfolio's write phase"
    if b_outcome == ["waited"]:  # serialised: A won, so B, loading now, is the duplicate
        assert refused is None
        with pytest.raises(DuplicatePledgeError):
            load_portfolio(loaded, b, NOW)
        return
    row = loaded.execute("SELECT facility_id, commodity, declared_quantity, registration_no"
                         " FROM lots WHERE lot_id = 'lot-x'").fetchone()
    sensors = loaded.execute("SELECT device_id FROM lot_sensors WHERE lot_id = 'lot-x'"
                             ).fetchall()
    assert (row, sensors) == (("fac-b", "copper", 5, "REG-XB"), [("lc-xb",)]), (
        f"B's pledge was overwritten by A's: lot {row}, sensors {sensors}")
    assert isinstance(refused, DuplicatePledgeError), "A's load must be refused as a duplicate"


# --- releases --------------------------------------------------------------------------------------

def test_release_lifecycle_reduces_the_declared_quantity_and_the_limit(
        loaded: psycopg.Connection, engine: LendingEngine) -> None:
    engine.recompute(["fac-a"])
    order = request_release(loaded, "rel-1", "lot-a1", 20, NOW)
    assert order.status is ReleaseStatus.REQUESTED
    with pytest.raises(LendingError, match="cannot become executed"):
        advance_release(loaded, "rel-1", ReleaseStatus.EXECUTED, NOW)  # not approved yet
    assert advance_release(loaded, "rel-1", ReleaseStatus.APPROVED, NOW).status is (
        ReleaseStatus.APPROVED)
    assert declared(loaded, "lot-a1") == 100, "approving must not move goods"
    executed = advance_release(loaded, "rel-1", ReleaseStatus.EXECUTED, NOW)
    assert executed.status is ReleaseStatus.EXECUTED and executed.executed_at == NOW
    assert declared(loaded, "lot-a1") == 80
    row = loaded.execute("SELECT status, approved_at, executed_at FROM release_orders"
                         " WHERE release_id = 'rel-1'").fetchone()
    assert row == ("executed", NOW, NOW)

    # The sensors still see 100 t, but only the declared 80 t count: 80 × 3000 × 0.9 × 0.6.
    snap = by_id(engine.recompute(["fac-a"]))["fac-a"].snapshot
    assert snap.lots[0].declared == 80 and snap.lots[0].pledged == 80
    assert snap.limit == pytest.approx(129_600)
    assert latest_snapshot_row(loaded, "fac-a")["credit_limit"] == pytest.approx(129_600)

    for to in (ReleaseStatus.APPROVED, ReleaseStatus.EXECUTED, ReleaseStatus.REJECTED):
        with pytest.raises(LendingError, match="rel-1 is executed"):
            advance_release(loaded, "rel-1", to, NOW)
    request_release(loaded, "rel-2", "lot-a1", 5, NOW)
    assert advance_release(loaded, "rel-2", ReleaseStatus.REJECTED, NOW).status is (
        ReleaseStatus.REJECTED)
    with pytest.raises(LendingError, match="rejected"):
        advance_release(loaded, "rel-2", ReleaseStatus.APPROVED, NOW)
    assert declared(loaded, "lot-a1") == 80


def test_release_requests_that_are_refused(loaded: psycopg.Connection) -> None:
    with pytest.raises(LendingError, match="cannot release 101"):
        request_release(loaded, "rel-big", "lot-a1", 101, NOW)
    with pytest.raises(LendingError, match="no lot"):
        request_release(loaded, "rel-nolot", "lot-zz", 1, NOW)
    with pytest.raises(ValueError, match="quantity"):
        request_release(loaded, "rel-zero", "lot-a1", 0, NOW)
    with pytest.raises(ValueError, match="quantity"):
        request_release(loaded, "rel-nan", "lot-a1", math.nan, NOW)
    request_release(loaded, "rel-1", "lot-a1", 1, NOW)
    with pytest.raises(LendingError, match="already exists"):
        request_release(loaded, "rel-1", "lot-a1", 2, NOW)
    with pytest.raises(LendingError, match="no release order"):
        advance_release(loaded, "rel-none", ReleaseStatus.APPROVED, NOW)
    assert loaded.execute("SELECT release_id, quantity FROM release_orders").fetchall() == [
        ("rel-1", 1)]


def test_releases_cannot_take_out_more_than_the_lot_holds(loaded: psycopg.Connection) -> None:
    # Each request fits the lot on its own; together they exceed it: the second is refused.
    request_release(loaded, "rel-a", "lot-a1", 60, NOW)
    with pytest.raises(LendingError, match="already requested or approved"):
        request_release(loaded, "rel-b", "lot-a1", 60, NOW)
    request_release(loaded, "rel-b", "lot-a1", 40, NOW)
    for rid in ("rel-a", "rel-b"):
        advance_release(loaded, rid, ReleaseStatus.APPROVED, NOW)
    # The lot shrinks by other means (a re-stated portfolio) before rel-b is executed: executing
    # must not silently release 40 units from a lot that now declares 30.
    loaded.execute("UPDATE lots SET declared_quantity = 90 WHERE lot_id = 'lot-a1'")
    loaded.commit()
    advance_release(loaded, "rel-a", ReleaseStatus.EXECUTED, NOW)
    assert declared(loaded, "lot-a1") == 30
    with pytest.raises(LendingError, match="cannot be executed"):
        advance_release(loaded, "rel-b", ReleaseStatus.EXECUTED, NOW)
    assert declared(loaded, "lot-a1") == 30


# --- repayments and prices -------------------------------------------------------------------------

def test_repay_lowers_outstanding_and_the_snapshot_follows(loaded: psycopg.Connection,
                                                           engine: LendingEngine) -> None:
    first = by_id(engine.recompute(["fac-a"]))["fac-a"].snapshot
    assert repay(loaded, "fac-a", 30_000, NOW) == 70_000
    assert loaded.execute("SELECT outstanding FROM facilities WHERE facility_id = 'fac-a'"
                          ).fetchone() == (70_000,)
    assert loaded.execute("SELECT facility_id, amount FROM repayments").fetchall() == [
        ("fac-a", 30_000)]
    second = by_id(engine.recompute(["fac-a"]))["fac-a"].snapshot
    assert second.limit == pytest.approx(first.limit)
    assert second.available == pytest.approx(first.available + 30_000)
    assert second.ltv == pytest.approx(70_000 / 270_000)
    row = latest_snapshot_row(loaded, "fac-a")
    assert float(row["outstanding"]) == 70_000
    assert float(row["available"]) == pytest.approx(92_000)
    assert any("outstanding" in reason for reason in row["reasons"]), row["reasons"]
    assert loaded.execute("SELECT count(*) FROM limit_snapshots WHERE facility_id = 'fac-a'"
                          ).fetchone() == (2,)

    assert repay(loaded, "fac-a", 1_000_000, NOW) == 0, "a repayment never goes below zero"
    for amount in (0, -5, math.nan, math.inf):
        with pytest.raises(LendingError, match="positive amount"):
            repay(loaded, "fac-a", amount, NOW)
    with pytest.raises(LendingError, match="no facility"):
        repay(loaded, "fac-zz", 10, NOW)
    assert loaded.execute("SELECT count(*) FROM repayments").fetchone() == (2,)


def test_a_price_fall_lowers_value_and_limit(loaded: psycopg.Connection,
                                             engine: LendingEngine) -> None:
    before = by_id(engine.recompute(["fac-a", "fac-b"]))
    fall = PricePoint("wheat", NOW - timedelta(hours=1), 2_700.0)
    assert post_prices(loaded, [fall]) == {"fac-a"}
    after = by_id(engine.recompute(["fac-a", "fac-b"]))
    a0, a1 = before["fac-a"].snapshot, after["fac-a"].snapshot
    (lot,) = a1.lots
    assert lot.price == 2_700
    # Two daily closes (the first price's day and the fall's day): the daily volatility raises
    # the haircut above the base 10 %. Both may fall on one UTC day just after midnight.
    days_apart = int(fall.time.timestamp() // 86_400) - int(FIRST_PRICE_TIME.timestamp() // 86_400)
    sigma = abs(math.log(2_700 / 3_000)) / math.sqrt(days_apart) if days_apart else 0.0
    cut = min(0.6, 0.1 + 2.33 * sigma * math.sqrt(WHEAT_LIQUIDATION_DAYS))
    assert lot.haircut == pytest.approx(cut)
    assert lot.value == pytest.approx(100 * 2_700 * (1 - cut), rel=1e-3)
    assert a1.collateral_value < a0.collateral_value
    assert a1.limit < a0.limit and a1.ltv > a0.ltv
    row = latest_snapshot_row(loaded, "fac-a")
    assert float(row["credit_limit"]) == pytest.approx(a1.limit, abs=0.01)
    assert row["inputs"]["lots"][0]["price"] == 2_700
    assert any("price 3,000.00 → 2,700.00" in reason for reason in row["reasons"]), row["reasons"]
    # fac-b holds no wheat: same limit, no new snapshot.
    assert after["fac-b"].snapshot.limit == before["fac-b"].snapshot.limit
    assert loaded.execute("SELECT count(*) FROM limit_snapshots WHERE facility_id = 'fac-b'"
                          ).fetchone() == (1,)

    with pytest.raises(LendingError, match="unknown commodities: gold"):
        post_prices(loaded, [PricePoint("gold", NOW, 500.0)])
    assert loaded.execute("SELECT count(*) FROM prices").fetchone() == (3,)


# --- alerts ----------------------------------------------------------------------------------------

def test_alert_acknowledge_and_resolve_lifecycle(loaded: psycopg.Connection) -> None:
    with pytest.raises(DuplicatePledgeError):
        load_portfolio(loaded, attempt(CLAIMS["registration number"]), NOW)
    (alert,) = list_alerts(loaded)
    assert alert.id is not None
    later = NOW + timedelta(minutes=5)

    acked = acknowledge_alert(loaded, alert.id, "officer-1", later)
    assert acked.status is AlertStatus.ACKNOWLEDGED
    with pytest.raises(LendingError, match="only an open alert"):
        acknowledge_alert(loaded, alert.id, "officer-2", later)
    (listed,) = list_alerts(loaded, facility_id="fac-a")
    assert (listed.status, listed.acknowledged_by, listed.acknowledged_at) == (
        AlertStatus.ACKNOWLEDGED, "officer-1", later)

    resolved = resolve_alert(loaded, alert.id, "officer-1", "registration checked", later)
    assert resolved.status is AlertStatus.RESOLVED
    with pytest.raises(LendingError, match="already resolved"):
        resolve_alert(loaded, alert.id, "officer-1", "again", later)
    with pytest.raises(LendingError, match="only an open alert"):
        acknowledge_alert(loaded, alert.id, "officer-1", later)
    for missing in (alert.id + 1000, -1):
        with pytest.raises(LendingError, match="no alert"):
            acknowledge_alert(loaded, missing, "officer-1", later)
        with pytest.raises(LendingError, match="no alert"):
            resolve_alert(loaded, missing, "officer-1", "x", later)

    assert list_alerts(loaded) == []
    (history,) = list_alerts(loaded, include_resolved=True)
    assert (history.status, history.resolved_by, history.comment) == (
        AlertStatus.RESOLVED, "officer-1", "registration checked")
    assert history.acknowledged_by == "officer-1"

    # Once resolved, a new attempt raises a new alert (the key is free again).
    with pytest.raises(DuplicatePledgeError):
        load_portfolio(loaded, attempt(CLAIMS["sensor lc-a1"]), NOW)
    (fresh,) = list_alerts(loaded)
    assert fresh.id != alert.id and fresh.status is AlertStatus.OPEN
    assert fresh.evidence["attempted"][0]["lot"] == "lot-c2"


# --- notifications ---------------------------------------------------------------------------------

def test_prices_repayments_and_releases_notify_pw_lending(loaded: psycopg.Connection, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pw_lending")
        listener.execute("LISTEN pw_alerts")

        def next_note(channel: str) -> str:
            for note in listener.notifies(timeout=5, stop_after=10):
                if note.channel == channel:
                    return note.payload
            raise AssertionError(f"no NOTIFY on {channel}")

        post_prices(loaded, [PricePoint("wheat", NOW, 2_950.0)])
        assert next_note("pw_lending") == "fac-a"
        post_prices(loaded, [PricePoint("wheat", NOW + timedelta(seconds=1), 2_960.0),
                             PricePoint("copper", NOW + timedelta(seconds=1), 71_000.0)])
        assert set(next_note("pw_lending").split(",")) == {"fac-a", "fac-b"}
        repay(loaded, "fac-b", 10, NOW)
        assert next_note("pw_lending") == "fac-b"
        request_release(loaded, "rel-n", "lot-b1", 1, NOW)
        advance_release(loaded, "rel-n", ReleaseStatus.APPROVED, NOW)
        assert next_note("pw_lending") == "fac-b"
        load_portfolio(loaded, portfolio(), NOW)
        assert next_note("pw_lending") == "*"

        with pytest.raises(DuplicatePledgeError):
            load_portfolio(loaded, attempt(CLAIMS["lot id"]), NOW)
        payload = next_note("pw_alerts")
        assert '"facility_id": "fac-a"' in payload and '"duplicate_pledge"' in payload
