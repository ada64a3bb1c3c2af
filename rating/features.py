"""The platform's indicators per borrower, computed daily in one set-based statement and kept with
their history in ``borrower_features`` (one row per borrower and day).

Every indicator named in :mod:`rating.indicators` that the platform holds is computed here as of the
end of the day ``as_of`` (UTC): the window ``[end − N days, end)``. Limit snapshots are events (one
is written when a limit moves), so a snapshot's values hold until the facility's next snapshot:
time shares, LTV and overadvance are measured over those spans, the snapshot in force at the start
of a window included. ``null`` means the platform has no value (a borrower with no facility, no
sales, no line sensors); the scorecard then gives the indicator's missing points.

- ``days_past_due_max_90d``: worst whole days past maturity of any drawdown over the window (an open
  one counts to the window's end, a repaid one to its last repayment); 0 with facilities and none.
- ``ltv_max_90d``: highest LTV in force (no collateral against debt counts as 10, the cap).
- ``overadvance_days_90d``: days (fractional) with outstanding above the limit.
- ``trust_below_one_share_30d``: share of the time of snapshots with lots in which a lot's trust < 1.
- ``critical_alerts_90d`` and ``alerts_by_type_90d`` (counts raised in the window, by type).
- ``days_of_stock``: verified stock valued at its snapshot price (verified × units per quote × price,
  the latest snapshot of each facility) ÷ average daily sales over 90 days.
- ``inventory_turnover_90d``: sales over 90 days ÷ the time-weighted average verified stock value.
- ``sales_per_day_90d`` (velocity), ``sales_trend_90d`` (last 30 days ÷ the monthly average of the 60
  before), ``sales_volatility_90d`` (coefficient of variation of 13 weekly sums, empty weeks as 0).
- ``line_utilisation_30d``: mean of ``line_running`` readings (0/1) of the devices on the borrower's
  lots or sites over 30 days; ``line_output_30d``: the ``line_count`` counters' rise.
- ``core_on_time_share_180d`` / ``core_late_payments_180d``: root vouchers of the borrower's core
  enterprise (its own, for a core) that fell due in 180 days, paid by the end of their due day.
- ``tenure_months``: months since the borrower was registered (``borrowers.created_at``).
- ``industry``, ``chain_tier``: not held by the platform yet (``null``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from rating.indicators import INDICATORS

NO_COLLATERAL_LTV = 10.0  # the LTV recorded when there is debt and no trusted collateral

_FEATURES_SQL = """
WITH p AS (SELECT %(end)s::timestamptz AS t_end),
fac AS (SELECT facility_id, borrower_id FROM facilities),
timeline AS (
    SELECT fac.borrower_id, s.facility_id, s.id, s.time, s.ltv, s.outstanding, s.credit_limit,
           s.inputs
    FROM limit_snapshots s JOIN fac USING (facility_id), p
    WHERE s.time >= p.t_end - interval '90 days' AND s.time < p.t_end
    UNION ALL
    SELECT fac.borrower_id, s.facility_id, s.id, s.time, s.ltv, s.outstanding, s.credit_limit,
           s.inputs
    FROM fac CROSS JOIN p CROSS JOIN LATERAL (
        SELECT * FROM limit_snapshots x
        WHERE x.facility_id = fac.facility_id AND x.time < p.t_end - interval '90 days'
        ORDER BY x.time DESC, x.id DESC LIMIT 1) s
),
spans AS (
    SELECT t.*,
           greatest(t.time, p.t_end - interval '90 days') AS t0,
           coalesce(lead(t.time) OVER (PARTITION BY t.facility_id ORDER BY t.time, t.id),
                    p.t_end) AS t1,
           (SELECT sum((l->>'verified')::float8 * coalesce((l->>'units_per_quote')::float8, 1)
                       * (l->>'price')::float8)
            FROM jsonb_array_elements(t.inputs->'lots') l
            WHERE l->>'price' IS NOT NULL) AS stock_value,
           jsonb_array_length(coalesce(t.inputs->'lots', '[]')) > 0 AS has_lots,
           EXISTS (SELECT 1 FROM jsonb_array_elements(t.inputs->'lots') l
                   WHERE (l->>'trust')::float8 < 1) AS trust_low
    FROM timeline t, p
),
risk AS (
    SELECT s.borrower_id,
           max(CASE WHEN s.ltv IS NULL THEN %(cap)s ELSE least(s.ltv, %(cap)s) END) AS ltv_max,
           sum(extract(epoch FROM s.t1 - s.t0)) FILTER (WHERE s.outstanding > s.credit_limit)
               / 86400.0 AS overadvance_days,
           sum(extract(epoch FROM s.t1 - greatest(s.t0, p.t_end - interval '30 days')))
               FILTER (WHERE s.has_lots AND s.trust_low AND s.t1 > p.t_end - interval '30 days')
               AS low_s,
           sum(extract(epoch FROM s.t1 - greatest(s.t0, p.t_end - interval '30 days')))
               FILTER (WHERE s.has_lots AND s.t1 > p.t_end - interval '30 days') AS lots_s
    FROM spans s, p WHERE s.t1 > s.t0 GROUP BY s.borrower_id
),
stock_avg AS (  -- per facility: time-weighted stock value over the window, and the latest
    SELECT s.borrower_id, s.facility_id,
           sum(coalesce(s.stock_value, 0) * extract(epoch FROM s.t1 - s.t0))
               / nullif(sum(extract(epoch FROM s.t1 - s.t0)), 0) AS avg_value,
           (array_agg(coalesce(s.stock_value, 0) ORDER BY s.time DESC, s.id DESC))[1] AS now_value
    FROM spans s WHERE s.t1 > s.t0 GROUP BY s.borrower_id, s.facility_id
),
stock AS (
    SELECT borrower_id, sum(avg_value) AS avg_value, sum(now_value) AS now_value
    FROM stock_avg GROUP BY borrower_id
),
sale AS (
    SELECT fac.borrower_id, s.amount::float8 AS amount, s.time
    FROM sales s JOIN fac USING (facility_id), p
    WHERE s.time >= p.t_end - interval '91 days' AND s.time < p.t_end
),
sales90 AS (
    SELECT s.borrower_id,
           coalesce(sum(s.amount) FILTER (WHERE s.time >= p.t_end - interval '90 days'), 0) AS total,
           coalesce(sum(s.amount) FILTER (WHERE s.time >= p.t_end - interval '30 days'), 0) AS last30,
           coalesce(sum(s.amount) FILTER (WHERE s.time >= p.t_end - interval '90 days'
                                          AND s.time < p.t_end - interval '30 days'), 0) AS prev60
    FROM sale s, p GROUP BY s.borrower_id
),
weekly AS (
    SELECT s.borrower_id, floor(extract(epoch FROM p.t_end - s.time) / 604800)::int AS week,
           sum(s.amount) AS amount
    FROM sale s, p GROUP BY 1, 2
),
volatility AS (
    SELECT w.borrower_id,
           stddev_pop(coalesce(x.amount, 0)) / nullif(avg(coalesce(x.amount, 0)), 0) AS cv
    FROM (SELECT DISTINCT borrower_id FROM weekly) w
    CROSS JOIN generate_series(0, 12) g (week)
    LEFT JOIN weekly x ON x.borrower_id = w.borrower_id AND x.week = g.week
    GROUP BY w.borrower_id
),
line_dev AS (
    SELECT ls.device_id, fac.borrower_id FROM lot_sensors ls
        JOIN lots l USING (lot_id) JOIN fac USING (facility_id)
    UNION
    SELECT d.device_id, fac.borrower_id FROM devices d
        JOIN lots l ON d.bound_to = l.lot_id JOIN fac USING (facility_id)
    UNION
    SELECT d.device_id, fac.borrower_id FROM devices d
        JOIN lots l ON d.bound_to = l.site JOIN fac USING (facility_id)
),
line_running AS (
    SELECT ld.borrower_id, avg(r.value) AS utilisation
    FROM line_dev ld JOIN readings r ON r.device_id = ld.device_id, p
    WHERE r.metric = 'line_running' AND r.time >= p.t_end - interval '30 days' AND r.time < p.t_end
    GROUP BY ld.borrower_id
),
line_count AS (
    SELECT borrower_id, sum(rise) AS output FROM (
        SELECT ld.borrower_id, max(r.value) - min(r.value) AS rise
        FROM line_dev ld JOIN readings r ON r.device_id = ld.device_id, p
        WHERE r.metric = 'line_count' AND r.time >= p.t_end - interval '30 days'
          AND r.time < p.t_end
        GROUP BY ld.borrower_id, ld.device_id) per_device
    GROUP BY borrower_id
),
alert_types AS (
    SELECT fac.borrower_id, a.type, count(*) AS n,
           count(*) FILTER (WHERE a.severity = 'critical') AS critical
    FROM alerts a JOIN fac USING (facility_id), p
    WHERE a.raised_at >= p.t_end - interval '90 days' AND a.raised_at < p.t_end
    GROUP BY 1, 2
),
alert_sum AS (
    SELECT borrower_id, sum(critical) AS critical, jsonb_object_agg(type, n) AS by_type
    FROM alert_types GROUP BY borrower_id
),
overdue AS (
    SELECT fac.borrower_id,
           max(greatest(0, floor(extract(epoch FROM
               least(coalesce(paid.settled, p.t_end), p.t_end) - d.maturity) / 86400.0)))
               AS dpd
    FROM drawdowns d JOIN fac USING (facility_id) CROSS JOIN p
    LEFT JOIN LATERAL (
        SELECT max(r.time) AS settled FROM repayments r
        WHERE d.status = 'repaid' AND r.facility_id = d.facility_id
          AND r.allocation @> jsonb_build_array(jsonb_build_object('drawdown_id', d.drawdown_id))
    ) paid ON true
    WHERE d.maturity < p.t_end
      AND (d.status = 'approved'
           OR (d.status = 'repaid' AND d.maturity >= p.t_end - interval '455 days'))
      AND coalesce(paid.settled, p.t_end) >= p.t_end - interval '90 days'
    GROUP BY fac.borrower_id
),
core_due AS (
    SELECT pr.core_id,
           count(*) AS due,
           count(*) FILTER (WHERE vp.paid_at < p.t_end
               AND vp.paid_at < date_trunc('day', v.maturity, 'UTC') + interval '1 day') AS on_time
    FROM vouchers v JOIN programmes pr USING (programme_id) CROSS JOIN p
    LEFT JOIN voucher_payments vp ON vp.root_id = v.voucher_id
    WHERE v.parent_id IS NULL
      AND v.maturity >= p.t_end - interval '180 days'
      AND date_trunc('day', v.maturity, 'UTC') + interval '1 day' <= p.t_end
    GROUP BY pr.core_id
),
has_fac AS (SELECT DISTINCT borrower_id FROM fac)
SELECT b.borrower_id, jsonb_build_object(
    'days_past_due_max_90d',
        CASE WHEN hf.borrower_id IS NOT NULL THEN coalesce(od.dpd, 0) END,
    'ltv_max_90d', rk.ltv_max,
    'overadvance_days_90d',
        CASE WHEN rk.borrower_id IS NOT NULL THEN coalesce(rk.overadvance_days, 0) END,
    'trust_below_one_share_30d', coalesce(rk.low_s, 0) / nullif(rk.lots_s, 0),
    'critical_alerts_90d',
        CASE WHEN hf.borrower_id IS NOT NULL THEN coalesce(al.critical, 0) END,
    'alerts_by_type_90d', coalesce(al.by_type, '{}'::jsonb),
    'days_of_stock', st.now_value / nullif(sa.total / 90.0, 0),
    'inventory_turnover_90d', sa.total / nullif(st.avg_value, 0),
    'sales_per_day_90d', sa.total / 90.0,
    'sales_trend_90d', sa.last30 / nullif(sa.prev60 / 2.0, 0),
    'sales_volatility_90d', vo.cv,
    'line_utilisation_30d', lr.utilisation,
    'line_output_30d', lc.output,
    'core_on_time_share_180d', cd.on_time::float8 / nullif(cd.due, 0),
    'core_late_payments_180d', cd.due - cd.on_time,
    'tenure_months',
        greatest(0, extract(epoch FROM p.t_end - b.created_at) / (86400 * 30.4375)),
    'industry', NULL,
    'chain_tier', NULL
) AS features
FROM borrowers b CROSS JOIN p
LEFT JOIN has_fac hf ON hf.borrower_id = b.borrower_id
LEFT JOIN risk rk ON rk.borrower_id = b.borrower_id
LEFT JOIN stock st ON st.borrower_id = b.borrower_id
LEFT JOIN sales90 sa ON sa.borrower_id = b.borrower_id
LEFT JOIN volatility vo ON vo.borrower_id = b.borrower_id
LEFT JOIN line_running lr ON lr.borrower_id = b.borrower_id
LEFT JOIN line_count lc ON lc.borrower_id = b.borrower_id
LEFT JOIN alert_sum al ON al.borrower_id = b.borrower_id
LEFT JOIN overdue od ON od.borrower_id = b.borrower_id
LEFT JOIN core_due cd ON cd.core_id = coalesce(b.core_id,
                                               CASE WHEN b.role = 'core' THEN b.borrower_id END)
"""

_STORE_SQL = ("INSERT INTO borrower_features (borrower_id, as_of, features)"
              f" SELECT borrower_id, %(as_of)s, features FROM ({_FEATURES_SQL}) computed"
              " ON CONFLICT (borrower_id, as_of) DO UPDATE"
              " SET features = EXCLUDED.features, computed_at = now()")


def day_end(as_of: date) -> datetime:
    """The end of the day ``as_of`` in UTC: the (exclusive) end of every window."""
    return datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=UTC)


def _params(as_of: date) -> dict[str, Any]:
    return {"end": day_end(as_of), "as_of": as_of, "cap": NO_COLLATERAL_LTV}


def compute_features(conn: psycopg.Connection, as_of: date) -> dict[str, dict[str, Any]]:
    """Every borrower's features as of the end of ``as_of``, without storing them."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_FEATURES_SQL, _params(as_of)).fetchall()
    return {r["borrower_id"]: r["features"] for r in rows}


def store_features(conn: psycopg.Connection, as_of: date) -> int:
    """Compute and store (replace) every borrower's features for ``as_of``; returns the row count."""
    cur = conn.execute(_STORE_SQL, _params(as_of))
    return cur.rowcount


def has_features(conn: psycopg.Connection, as_of: date) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM borrower_features WHERE as_of = %s)",
                       (as_of,)).fetchone()
    return bool(row and row[0])


def latest_features(conn: psycopg.Connection,
                    borrower_ids: list[str] | None = None) -> dict[str, tuple[date, dict[str, Any]]]:
    """Each borrower's newest stored features: borrower -> (as_of, features)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT DISTINCT ON (borrower_id) borrower_id, as_of, features FROM borrower_features"
            " WHERE (%(ids)s::text[] IS NULL OR borrower_id = ANY(%(ids)s))"
            " ORDER BY borrower_id, as_of DESC", {"ids": borrower_ids}).fetchall()
    return {r["borrower_id"]: (r["as_of"], r["features"]) for r in rows}


def indicator_columns(features: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Features of many borrowers as one column per indicator (``None`` where missing), in the
    order of ``features``: what a points card scores."""
    columns: dict[str, list[Any]] = {}
    for name, indicator in INDICATORS.items():
        values = [row.get(name) for row in features.values()]
        if indicator.kind == "numeric":
            columns[name] = [float("nan") if v is None else float(v) for v in values]
        else:
            columns[name] = [None if v is None else str(v) for v in values]
    return columns
