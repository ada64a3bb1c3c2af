"""Read queries of the API. Every query that takes an id from a caller also takes the caller's
``scope`` (a borrower id, or None for the bank's own users) and filters on it in SQL, so an object
outside the scope is indistinguishable from one that does not exist (OWASP API1)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from lending.store import ALERT_COLUMNS, terms_from_json

Scope = str | None

# facility f is visible to the scope
IN_SCOPE = "(%(scope)s::text IS NULL OR f.borrower_id = %(scope)s)"

LATEST_SNAPSHOT = """LEFT JOIN LATERAL (
    SELECT id, time, credit_limit, available, outstanding, collateral_value, ltv
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
    rows = _dicts(conn, f"""
        SELECT f.facility_id, f.borrower_id, f.currency, f.line, f.terms, s.id AS snapshot_id,
               s.time, s.credit_limit AS "limit", s.available, coalesce(s.outstanding, f.outstanding)
               AS outstanding, s.collateral_value, s.ltv
        FROM facilities f {LATEST_SNAPSHOT}
        WHERE f.facility_id = %(id)s AND {IN_SCOPE}""", {"id": facility_id, "scope": scope})
    return _ltv_lines(rows[0]) if rows else None


def facilities(conn: psycopg.Connection, scope: Scope, limit: int, offset: int,
               borrower_id: str | None = None) -> list[dict[str, Any]]:
    """The portfolio, riskiest first: open critical alerts, then LTV against the liquidation line."""
    rows = _dicts(conn, f"""
        SELECT f.facility_id, f.borrower_id, b.name AS borrower_name, f.currency, f.line, f.terms,
               s.id AS snapshot_id, s.time, s.credit_limit AS "limit", s.available,
               coalesce(s.outstanding, f.outstanding) AS outstanding, s.collateral_value, s.ltv,
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
               s.collateral_value, s.ltv, s.reasons,
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
    return _dicts(conn, f"""
        SELECT {ALERT_FIELDS}, f.borrower_id FROM alerts a JOIN facilities f USING (facility_id)
        WHERE {IN_SCOPE}
          AND (%(facility)s::text IS NULL OR a.facility_id = %(facility)s)
          AND (%(status)s::text IS NULL OR a.status = %(status)s
               OR (%(status)s = 'active' AND a.status <> 'resolved'))
          AND (%(severity)s::text IS NULL OR a.severity = %(severity)s)
          AND (%(type)s::text IS NULL OR a.type = %(type)s)
          AND (%(lot)s::text IS NULL OR a.lot_id = %(lot)s)
        ORDER BY a.id DESC LIMIT %(limit)s OFFSET %(offset)s""",
        {"scope": scope, "facility": facility_id, "status": status, "severity": severity,
         "type": alert_type, "lot": lot_id, "limit": limit, "offset": offset})


def alert(conn: psycopg.Connection, scope: Scope, alert_id: int) -> dict[str, Any] | None:
    rows = _dicts(conn, f"""SELECT {ALERT_FIELDS}, f.borrower_id FROM alerts a
                            JOIN facilities f USING (facility_id)
                            WHERE a.id = %(id)s AND {IN_SCOPE}""", {"id": alert_id, "scope": scope})
    return rows[0] if rows else None
