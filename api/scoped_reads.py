"""Read queries of the API. Every query that takes an id from a caller also takes the caller's
``scope`` (a borrower id, or None for the bank's own users) and filters on it in SQL, so an object
outside the scope is indistinguishable from one that does not exist (OWASP API1)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from lending.domain.detectors import point_in_polygon
from lending.store import ALERT_COLUMNS, terms_from_json
from rating import service as rating_service
from telemetry.contract.catalogue import CATALOGUE

Scope = str | None

# facility f is visible to the scope
IN_SCOPE = "(%(scope)s::text IS NULL OR f.borrower_id = %(scope)s)"

LATEST_SNAPSHOT = """LEFT JOIN LATERAL (
    SELECT id, time, credit_limit, available, outstanding, collateral_value,
           trusted_collateral_value, ltv
    FROM limit_snapshots WHERE facility_id = f.facility_id ORDER BY time DESC, id DESC LIMIT 1
) s ON true"""


def _dicts(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _ltv_lines(row: dict[str, Any]) -> dict[str, Any]:
    terms = terms_from_json(row.pop("terms") or {})
    ltv = row.get("ltv")
    row["warning_ltv"], row["liquidation_ltv"] = terms.warning_ltv, terms.liquidation_ltv
    if ltv is None and row.get("snapshot_id") is not None and (row.get("outstanding") or 0) > 0:
        row["ltv_status"] = "liquidation"  # debt and no collateral
    elif ltv is None:
        row["ltv_status"] = "unknown" if row.get("snapshot_id") is None else "ok"
    else:
        row["ltv_status"] = ("liquidation" if ltv >= terms.liquidation_ltv
                             else "warning" if ltv >= terms.warning_ltv else "ok")
    return row


def facility_limit(conn: psycopg.Connection, scope: Scope, facility_id: str) -> dict[str, Any] | None:
    """The limit and LTV of the latest snapshot; outstanding and available from the live,
    derived outstanding (a drawdown or repayment shows at once, before the engine's next pass).
    On the API's hot path: the scope goes into the SQL text only when there is one (two
    statements, each prepared with a generic plan), and amounts come back as float8, the shape the
    API answers with, instead of Decimals that are converted afterwards."""
    in_scope = "" if scope is None else " AND f.borrower_id = %(scope)s"
    rows = _dicts(conn, f"""
        SELECT f.facility_id, f.borrower_id, f.currency, f.line::float8 AS line, f.terms,
               s.id AS snapshot_id, s.time, s.credit_limit::float8 AS "limit",
               greatest(0, s.credit_limit - f.outstanding)::float8 AS available,
               f.outstanding::float8 AS outstanding,
               s.collateral_value::float8 AS collateral_value,
               s.trusted_collateral_value::float8 AS trusted_collateral_value, s.ltv
        FROM facilities f {LATEST_SNAPSHOT}
        WHERE f.facility_id = %(id)s{in_scope}""", {"id": facility_id, "scope": scope})
    return _ltv_lines(rows[0]) if rows else None


def facilities(conn: psycopg.Connection, scope: Scope, limit: int, offset: int,
               borrower_id: str | None = None) -> list[dict[str, Any]]:
    """The portfolio, riskiest first: open critical alerts, then LTV against the liquidation line."""
    rows = _dicts(conn, f"""
        SELECT f.facility_id, f.borrower_id, b.name AS borrower_name, f.currency, f.line, f.terms,
               s.id AS snapshot_id, s.time, s.credit_limit AS "limit",
               greatest(0, s.credit_limit - f.outstanding) AS available,
               f.outstanding, s.collateral_value,
               s.trusted_collateral_value, s.ltv,
               coalesce(a.open, 0) AS open_alerts, coalesce(a.critical, 0) AS critical_alerts
        FROM facilities f JOIN borrowers b USING (borrower_id) {LATEST_SNAPSHOT}
        LEFT JOIN (SELECT facility_id, count(*) AS open,
                          count(*) FILTER (WHERE severity = 'critical') AS critical
                   FROM alerts WHERE status <> 'resolved' GROUP BY facility_id) a
               ON a.facility_id = f.facility_id
        WHERE {IN_SCOPE} AND (%(borrower)s::text IS NULL OR f.borrower_id = %(borrower)s)
        ORDER BY coalesce(a.critical, 0) DESC,
                 CASE WHEN s.id IS NULL THEN NULL
                      WHEN s.ltv IS NULL THEN CASE WHEN s.outstanding > 0 THEN 1e9 ELSE 0 END
                      ELSE s.ltv / coalesce(nullif((f.terms->>'liquidation_ltv')::float8, 0), 0.9)
                 END DESC NULLS LAST,
                 coalesce(a.open, 0) DESC, f.facility_id
        LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "borrower": borrower_id, "limit": limit, "offset": offset})
    return [_ltv_lines(r) for r in rows]


def facility_exists(conn: psycopg.Connection, scope: Scope, facility_id: str) -> bool:
    return conn.execute(f"SELECT 1 FROM facilities f WHERE f.facility_id = %(id)s AND {IN_SCOPE}",
                        {"id": facility_id, "scope": scope}).fetchone() is not None


def limit_history(conn: psycopg.Connection, scope: Scope, facility_id: str, limit: int,
                  offset: int) -> list[dict[str, Any]]:
    """Snapshots newest first, with the price and verified quantity behind each."""
    return _dicts(conn, f"""
        SELECT s.id, s.time, s.credit_limit AS "limit", s.available, s.outstanding,
               s.collateral_value, s.trusted_collateral_value, s.ltv, s.reasons,
               (SELECT coalesce(sum((l->>'verified')::float8), 0)
                  FROM jsonb_array_elements(s.inputs->'lots') l) AS verified_quantity,
               (SELECT coalesce(sum((l->>'declared')::float8), 0)
                  FROM jsonb_array_elements(s.inputs->'lots') l) AS declared_quantity,
               (SELECT jsonb_object_agg(l->>'commodity', (l->>'price')::float8)
                  FROM jsonb_array_elements(s.inputs->'lots') l
                  WHERE l->>'price' IS NOT NULL) AS prices
        FROM limit_snapshots s JOIN facilities f USING (facility_id)
        WHERE s.facility_id = %(id)s AND {IN_SCOPE}
        ORDER BY s.time DESC, s.id DESC LIMIT %(limit)s OFFSET %(offset)s""",
        {"id": facility_id, "scope": scope, "limit": limit, "offset": offset})


def snapshot(conn: psycopg.Connection, scope: Scope, facility_id: str,
             snapshot_id: int) -> dict[str, Any] | None:
    rows = _dicts(conn, f"""
        SELECT s.id, s.time, s.reasons, s.inputs FROM limit_snapshots s
        JOIN facilities f USING (facility_id)
        WHERE s.id = %(sid)s AND s.facility_id = %(id)s AND {IN_SCOPE}""",
        {"sid": snapshot_id, "id": facility_id, "scope": scope})
    return rows[0] if rows else None


ALERT_FIELDS = ", ".join(f"a.{c.strip()}" for c in ALERT_COLUMNS.split(","))


def alerts(conn: psycopg.Connection, scope: Scope, limit: int, offset: int, *,
           facility_id: str | None = None, status: str | None = None, severity: str | None = None,
           alert_type: str | None = None, lot_id: str | None = None) -> list[dict[str, Any]]:
    """Only the filters given go into the SQL text. With ``(%(x)s IS NULL OR col = %(x)s)`` for
    every filter, PostgreSQL either re-plans each call or keeps a generic plan that cannot use the
    borrower index (a sequential scan of the facilities); each combination here is a prepared
    statement of its own whose generic plan uses the indexes."""
    where = ["f.borrower_id = %(scope)s"] if scope is not None else []
    for value, condition in ((facility_id, "a.facility_id = %(facility)s"),
                             (severity, "a.severity = %(severity)s"),
                             (alert_type, "a.type = %(type)s"), (lot_id, "a.lot_id = %(lot)s")):
        if value is not None:
            where.append(condition)
    if status == "active":
        where.append("a.status <> 'resolved'")
    elif status is not None:
        where.append("a.status = %(status)s")
    return _dicts(conn, f"""
        SELECT {ALERT_FIELDS}, f.borrower_id FROM alerts a JOIN facilities f USING (facility_id)
        WHERE {" AND ".join(where) or "true"}
        ORDER BY a.id DESC LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "facility": facility_id, "status": status, "severity": severity,
         "type": alert_type, "lot": lot_id, "limit": limit, "offset": offset})


def alert(conn: psycopg.Connection, scope: Scope, alert_id: int) -> dict[str, Any] | None:
    rows = _dicts(conn, f"""SELECT {ALERT_FIELDS}, f.borrower_id FROM alerts a
                            JOIN facilities f USING (facility_id)
                            WHERE a.id = %(id)s AND {IN_SCOPE}""", {"id": alert_id, "scope": scope})
    return rows[0] if rows else None


# --- devices, telemetry, borrowers, lots, releases, prices, sales and receivables -------------

# device d is visible to the scope: every device to the bank; to an enterprise, the sensors bound
# (lot_sensors) to lots of its own facilities
DEVICE_IN_SCOPE = f"""(%(scope)s::text IS NULL OR EXISTS (
    SELECT 1 FROM lot_sensors ls JOIN lots l USING (lot_id) JOIN facilities f USING (facility_id)
    WHERE ls.device_id = d.device_id AND {IN_SCOPE}))"""

DEVICE_FIELDS = """d.device_id, d.tenant, d.kind, d.enabled, d.bound_to,
    d.credentials_hash IS NOT NULL AS has_credentials, ls.lot_id, l.facility_id, st.online,
    st.last_seen, d.created_at"""

DEVICE_JOINS = """devices d LEFT JOIN lot_sensors ls USING (device_id)
    LEFT JOIN lots l ON l.lot_id = ls.lot_id
    LEFT JOIN device_status st ON st.device_id = d.device_id"""


def devices(conn: psycopg.Connection, scope: Scope, limit: int, offset: int, *,
            lot_id: str | None = None, facility_id: str | None = None) -> list[dict[str, Any]]:
    return _dicts(conn, f"""
        SELECT {DEVICE_FIELDS} FROM {DEVICE_JOINS}
        WHERE {DEVICE_IN_SCOPE}
          AND (%(lot)s::text IS NULL OR ls.lot_id = %(lot)s)
          AND (%(facility)s::text IS NULL OR l.facility_id = %(facility)s)
        ORDER BY d.device_id LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "lot": lot_id, "facility": facility_id, "limit": limit,
         "offset": offset})


def device(conn: psycopg.Connection, scope: Scope, device_id: str) -> dict[str, Any] | None:
    rows = _dicts(conn, f"SELECT {DEVICE_FIELDS} FROM {DEVICE_JOINS}"
                        f" WHERE d.device_id = %(id)s AND {DEVICE_IN_SCOPE}",
                  {"id": device_id, "scope": scope})
    return rows[0] if rows else None


def latest_by_device(conn: psycopg.Connection, scope: Scope, limit: int, offset: int, *,
                     device_id: str | None = None, lot_id: str | None = None,
                     facility_id: str | None = None) -> list[dict[str, Any]]:
    """Visible devices with their status and the latest value of each metric they report (one
    backward index probe per device and metric of the catalogue)."""
    rows = _dicts(conn, f"""
        SELECT d.device_id, d.kind, ls.lot_id, st.online, st.last_seen,
               coalesce((SELECT jsonb_object_agg(m.metric, jsonb_build_object(
                                    'value', r.value, 'time', r.time))
                         FROM unnest(%(metrics)s::text[]) AS m(metric)
                         CROSS JOIN LATERAL (
                             SELECT time, value FROM readings r
                             WHERE r.device_id = d.device_id AND r.metric = m.metric
                             ORDER BY time DESC, boot DESC, seq DESC LIMIT 1) r),
                        '{{}}'::jsonb) AS readings
        FROM {DEVICE_JOINS}
        WHERE {DEVICE_IN_SCOPE}
          AND (%(device)s::text IS NULL OR d.device_id = %(device)s)
          AND (%(lot)s::text IS NULL OR ls.lot_id = %(lot)s)
          AND (%(facility)s::text IS NULL OR l.facility_id = %(facility)s)
        ORDER BY d.device_id LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "metrics": sorted(CATALOGUE), "device": device_id, "lot": lot_id,
         "facility": facility_id, "limit": limit, "offset": offset})
    return rows


def lot_device_ids(conn: psycopg.Connection, scope: Scope, lot_id: str) -> list[str] | None:
    """The sensors of a visible lot (None: no such lot in the scope)."""
    rows = conn.execute(f"""
        SELECT l.lot_id, ls.device_id FROM lots l JOIN facilities f USING (facility_id)
        LEFT JOIN lot_sensors ls ON ls.lot_id = l.lot_id
        WHERE l.lot_id = %(id)s AND {IN_SCOPE} ORDER BY ls.device_id""",
        {"id": lot_id, "scope": scope}).fetchall()
    if not rows:
        return None
    return [r[1] for r in rows if r[1] is not None]


BORROWER_FIELDS = """b.borrower_id, b.name, b.role, b.core_id, b.created_at,
    coalesce((SELECT array_agg(f2.facility_id ORDER BY f2.facility_id) FROM facilities f2
              WHERE f2.borrower_id = b.borrower_id), '{}') AS facilities"""
BORROWER_IN_SCOPE = "(%(scope)s::text IS NULL OR b.borrower_id = %(scope)s)"


def borrowers(conn: psycopg.Connection, scope: Scope, limit: int,
              offset: int) -> list[dict[str, Any]]:
    return _dicts(conn, f"SELECT {BORROWER_FIELDS} FROM borrowers b WHERE {BORROWER_IN_SCOPE}"
                        " ORDER BY b.borrower_id LIMIT %(limit)s OFFSET %(offset)s",
                  {"scope": scope, "limit": limit, "offset": offset})


def borrower(conn: psycopg.Connection, scope: Scope, borrower_id: str) -> dict[str, Any] | None:
    rows = _dicts(conn, f"SELECT {BORROWER_FIELDS} FROM borrowers b"
                        f" WHERE b.borrower_id = %(id)s AND {BORROWER_IN_SCOPE}",
                  {"id": borrower_id, "scope": scope})
    return rows[0] if rows else None


# lot l is visible to the scope: the bank, the borrower, or the warehouse operator storing it
# ('op:<operator_id>'; no borrower id starts with 'op:', migration 0021)
LOT_IN_SCOPE = ("(%(scope)s::text IS NULL OR f.borrower_id = %(scope)s"
                " OR 'op:' || l.operator_id = %(scope)s)")

LOT_QUERY = f"""
    SELECT l.lot_id, l.facility_id, f.borrower_id, l.commodity, l.declared_quantity,
           l.unit_weight_kg, l.registration_no, l.site, l.vehicle, l.geofence, l.operator_id,
           s.id AS snapshot_id, s.time AS snapshot_time,
           (SELECT x FROM jsonb_array_elements(s.inputs->'lots') x
             WHERE x->>'lot_id' = l.lot_id LIMIT 1) AS line,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'device_id', d.device_id, 'kind', d.kind, 'enabled', d.enabled,
                        'online', st.online, 'last_seen', st.last_seen) ORDER BY d.device_id)
                     FROM lot_sensors ls JOIN devices d USING (device_id)
                     LEFT JOIN device_status st ON st.device_id = d.device_id
                     WHERE ls.lot_id = l.lot_id), '[]'::jsonb) AS sensors,
           pos.device_id AS pos_device, pos.time AS pos_time, pos.lat, pos.lon
    FROM lots l JOIN facilities f USING (facility_id)
    LEFT JOIN LATERAL (
        SELECT id, time, inputs FROM limit_snapshots
        WHERE facility_id = l.facility_id ORDER BY time DESC, id DESC LIMIT 1) s ON true
    LEFT JOIN LATERAL (
        SELECT ls.device_id, la.time, la.value AS lat, lo.value AS lon
        FROM lot_sensors ls
        CROSS JOIN LATERAL (SELECT time, value FROM readings r
                            WHERE r.device_id = ls.device_id AND r.metric = 'lat'
                            ORDER BY time DESC, boot DESC, seq DESC LIMIT 1) la
        CROSS JOIN LATERAL (SELECT value FROM readings r
                            WHERE r.device_id = ls.device_id AND r.metric = 'lon'
                            ORDER BY time DESC, boot DESC, seq DESC LIMIT 1) lo
        WHERE ls.lot_id = l.lot_id ORDER BY la.time DESC, ls.device_id LIMIT 1) pos ON true
    WHERE {LOT_IN_SCOPE}"""


def _lot_status(row: dict[str, Any]) -> dict[str, Any]:
    line = row.pop("line")
    snapshot_id, snapshot_time = row.pop("snapshot_id"), row.pop("snapshot_time")
    row["pledge"] = None if line is None else {
        "snapshot_id": snapshot_id, "time": snapshot_time,
        **{k: line.get(k) for k in ("declared", "verified", "pledged", "trust", "trust_factors",
                                    "price", "price_time", "haircut", "value", "contribution")}}
    device_id, time, lat, lon = (row.pop(k) for k in ("pos_device", "pos_time", "lat", "lon"))
    row["location"] = None if device_id is None else {"lat": lat, "lon": lon, "time": time,
                                                      "device_id": device_id}
    fence = row["geofence"]
    row["inside_geofence"] = (None if fence is None or device_id is None
                              else point_in_polygon(lat, lon, [tuple(p) for p in fence]))
    return row


def lots(conn: psycopg.Connection, scope: Scope, limit: int, offset: int, *,
         facility_id: str | None = None) -> list[dict[str, Any]]:
    rows = _dicts(conn, LOT_QUERY + """
          AND (%(facility)s::text IS NULL OR l.facility_id = %(facility)s)
        ORDER BY l.lot_id LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "facility": facility_id, "limit": limit, "offset": offset})
    return [_lot_status(r) for r in rows]


def lot(conn: psycopg.Connection, scope: Scope, lot_id: str) -> dict[str, Any] | None:
    rows = _dicts(conn, LOT_QUERY + " AND l.lot_id = %(id)s", {"scope": scope, "id": lot_id})
    return _lot_status(rows[0]) if rows else None


def lot_exists(conn: psycopg.Connection, scope: Scope, lot_id: str) -> bool:
    return conn.execute(f"SELECT 1 FROM lots l JOIN facilities f USING (facility_id)"
                        f" WHERE l.lot_id = %(id)s AND {IN_SCOPE}",
                        {"id": lot_id, "scope": scope}).fetchone() is not None


def inspections(conn: psycopg.Connection, scope: Scope, lot_id: str, limit: int,
                offset: int) -> list[dict[str, Any]] | None:
    """A lot's field inspections, newest count first; None when the caller may not see the lot."""
    if not lot_exists(conn, scope, lot_id):
        return None
    return _dicts(conn, """
        SELECT id, lot_id, facility_id, counted_quantity, counted_at, counted_by, note,
               sensor_quantity, recorded_by, created_at
        FROM inspections WHERE lot_id = %(id)s
        ORDER BY counted_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s""",
        {"id": lot_id, "limit": limit, "offset": offset})


RELEASE_QUERY = f"""
    SELECT r.release_id, r.lot_id, l.facility_id, f.borrower_id, r.quantity, r.status,
           r.requested_at, r.approved_at, r.executed_at
    FROM release_orders r JOIN lots l USING (lot_id) JOIN facilities f USING (facility_id)
    WHERE {IN_SCOPE}"""


def releases(conn: psycopg.Connection, scope: Scope, limit: int, offset: int, *,
             lot_id: str | None = None, facility_id: str | None = None,
             status: str | None = None) -> list[dict[str, Any]]:
    return _dicts(conn, RELEASE_QUERY + """
          AND (%(lot)s::text IS NULL OR r.lot_id = %(lot)s)
          AND (%(facility)s::text IS NULL OR l.facility_id = %(facility)s)
          AND (%(status)s::text IS NULL OR r.status = %(status)s)
        ORDER BY r.requested_at DESC, r.release_id LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "lot": lot_id, "facility": facility_id, "status": status,
         "limit": limit, "offset": offset})


def release(conn: psycopg.Connection, scope: Scope, release_id: str) -> dict[str, Any] | None:
    rows = _dicts(conn, RELEASE_QUERY + " AND r.release_id = %(id)s",
                  {"scope": scope, "id": release_id})
    return rows[0] if rows else None


def prices(conn: psycopg.Connection, limit: int, offset: int, *, commodity: str | None = None,
           start: Any = None, end: Any = None) -> list[dict[str, Any]]:
    """Prices newest first (prices are market data: not scoped to a borrower)."""
    return _dicts(conn, """
        SELECT commodity, time, price, currency FROM prices
        WHERE (%(commodity)s::text IS NULL OR commodity = %(commodity)s)
          AND (%(start)s::timestamptz IS NULL OR time >= %(start)s)
          AND (%(end)s::timestamptz IS NULL OR time < %(end)s)
        ORDER BY time DESC, commodity LIMIT %(limit)s OFFSET %(offset)s""",
        {"commodity": commodity, "start": start, "end": end, "limit": limit, "offset": offset})


def sales(conn: psycopg.Connection, scope: Scope, limit: int, offset: int, *,
          facility_id: str | None = None) -> list[dict[str, Any]]:
    return _dicts(conn, f"""
        SELECT s.id, s.facility_id, s.time, s.amount FROM sales s
        JOIN facilities f USING (facility_id)
        WHERE {IN_SCOPE} AND (%(facility)s::text IS NULL OR s.facility_id = %(facility)s)
        ORDER BY s.time DESC, s.id DESC LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "facility": facility_id, "limit": limit, "offset": offset})


def receivables(conn: psycopg.Connection, scope: Scope, limit: int, offset: int, *,
                facility_id: str | None = None, verified: bool | None = None,
                trade_status: str | None = None) -> list[dict[str, Any]]:
    return _dicts(conn, f"""
        SELECT r.receivable_id, r.facility_id, r.debtor, r.amount, r.due, r.related_party,
               r.disputed, r.paid, r.verified, r.verified_at, r.verified_by, r.posted_by,
               r.debtor_id, r.programme_id, r.confirmed_at, r.confirmed_by, r.shipment,
               r.trade_status, r.trade_evidence
        FROM receivables r JOIN facilities f USING (facility_id)
        WHERE ({IN_SCOPE} OR r.debtor_id = %(scope)s)
          AND (%(facility)s::text IS NULL OR r.facility_id = %(facility)s)
          AND (%(verified)s::boolean IS NULL OR r.verified = %(verified)s)
          AND (%(trade)s::text IS NULL OR r.trade_status = %(trade)s)
        ORDER BY r.due, r.receivable_id LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "facility": facility_id, "verified": verified, "trade": trade_status,
         "limit": limit, "offset": offset})


def receivable_exists(conn: psycopg.Connection, scope: Scope, receivable_id: str) -> bool:
    return conn.execute(f"""SELECT 1 FROM receivables r JOIN facilities f USING (facility_id)
                            WHERE r.receivable_id = %(id)s AND {IN_SCOPE}""",
                        {"id": receivable_id, "scope": scope}).fetchone() is not None


# --- credit ratings -------------------------------------------------------------------------------

def borrower_rating(conn: psycopg.Connection, scope: Scope,
                    borrower_id: str) -> dict[str, Any] | None:
    """The borrower's rating and grade history; None when the borrower is not in scope (or does
    not exist), an empty rating when it has not been rated yet."""
    if borrower(conn, scope, borrower_id) is None:
        return None
    return rating_service.borrower_rating(conn, borrower_id) or {
        "borrower_id": borrower_id, "current": None, "history": [], "grade_changes": []}


def ratings(conn: psycopg.Connection, grade: str | None, limit: int,
            offset: int) -> list[dict[str, Any]]:
    """Officers: the newest rating of each borrower, by borrower id."""
    return rating_service.latest_ratings(conn, grade, limit, offset)
