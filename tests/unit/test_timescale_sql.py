"""The SQL of the TimescaleDB path (no database: there is no TimescaleDB on this machine, so these
check the statements produced, not their effect) and the classification of the errors that make
``migrate`` fall back to plain PostgreSQL."""

from __future__ import annotations

import inspect
import re
from datetime import timedelta

import pytest

from pledgewatch.runtime import time_series_options
from pledgewatch.settings import Settings
from schema.timescale import (
    BUCKET,
    NOT_ALLOWED,
    NOT_PRELOADED,
    REFRESH_EVERY,
    TimeSeriesOptions,
    fallback_reason,
    plain_statements,
    refresh_window,
    timescaledb_statements,
)
from telemetry import queries


def statement(options: TimeSeriesOptions, needle: str) -> tuple[str, tuple[object, ...] | None]:
    found = [s for s in timescaledb_statements(options) if needle in s[0]]
    assert len(found) == 1, [s[0] for s in timescaledb_statements(options)]
    return found[0]


def squeeze(sql: str) -> str:
    return " ".join(sql.split())


def test_the_hypertable_gets_no_default_time_index() -> None:
    sql, params = statement(TimeSeriesOptions(chunk_interval="6 hours"), "create_hypertable")
    assert "create_default_indexes => false" in sql
    assert "migrate_data => true" in sql and "if_not_exists => true" in sql
    assert params == ("6 hours",)


def test_compression_orders_like_the_latest_value_lookup() -> None:
    """The orderby is the ORDER BY of telemetry.queries.latest_readings, the segmentby its
    equality filters: the newest row of a (device, metric) is the first of its segment."""
    lookup = squeeze(inspect.getsource(queries.latest_readings))
    order = re.search(r"ORDER BY (time DESC, boot DESC, seq DESC) LIMIT 1", lookup)
    assert order is not None, "the latest-value lookup changed: update ORDER_BY in schema/timescale"
    assert "r.device_id = d.device_id AND r.metric = m.metric" in lookup
    sql, params = statement(TimeSeriesOptions(), "compress_orderby")
    assert f"timescaledb.compress_orderby = '{order[1]}'" in sql
    assert "timescaledb.compress_segmentby = 'device_id, metric'" in sql
    assert params is None


def test_compression_columns_cover_the_dedupe_key() -> None:
    sql, _ = statement(TimeSeriesOptions(), "compress_orderby")
    segment = re.search(r"compress_segmentby = '([^']+)'", sql)
    order = re.search(r"compress_orderby = '([^']+)'", sql)
    assert segment and order
    columns = {c.strip() for c in segment[1].split(",")} | {
        c.split()[0] for c in order[1].split(",")}
    assert columns == {"device_id", "metric", "time", "boot", "seq"}  # readings_dedupe


def test_the_hourly_aggregate_is_real_time() -> None:
    sql, _ = statement(TimeSeriesOptions(), "CREATE MATERIALIZED VIEW")
    assert "timescaledb.continuous" in sql
    assert "timescaledb.materialized_only = false" in sql
    assert "WITH NO DATA" in sql
    for column in ("bucket", "device_id", "metric", "min", "max", "avg", "last", "count"):
        assert re.search(rf"\b{column}\b", sql), column


@pytest.mark.parametrize("late", [timedelta(minutes=1), timedelta(hours=5), timedelta(days=7),
                                  timedelta(days=30)])
def test_the_refresh_window_reaches_past_the_accepted_lateness(late: timedelta) -> None:
    """A reading accepted ``late`` late lands in a bucket that starts up to one bucket earlier;
    the window is aligned to buckets and the next refresh runs up to REFRESH_EVERY later. All of
    that must still be inside [now - start_offset, now - end_offset]."""
    options = TimeSeriesOptions(late_window=late)
    sql, params = statement(options, "add_continuous_aggregate_policy")
    assert params is not None
    start_offset, end_offset, every = params
    assert (start_offset, end_offset) == refresh_window(options)
    assert every == REFRESH_EVERY
    assert isinstance(start_offset, timedelta) and isinstance(end_offset, timedelta)
    assert start_offset >= late + 2 * BUCKET + REFRESH_EVERY
    assert start_offset - end_offset >= 2 * BUCKET  # TimescaleDB wants two buckets at least
    assert "start_offset => %s" in sql and "end_offset => %s" in sql


def test_the_settings_carry_the_gateway_lateness_into_the_refresh_window() -> None:
    settings = Settings(max_past_age_s=10 * 86400)
    options = time_series_options(settings)
    assert options.late_window == timedelta(days=10)
    start_offset, _ = refresh_window(options)
    assert start_offset > timedelta(days=10)


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=-1)])
def test_a_late_window_that_is_not_positive_is_refused(late: timedelta) -> None:
    with pytest.raises(ValueError, match="late_window must be positive"):
        timescaledb_statements(TimeSeriesOptions(late_window=late))


def test_hostile_option_text_stays_a_parameter() -> None:
    hostile = "1 day'); DROP TABLE readings; --"
    options = TimeSeriesOptions(chunk_interval=hostile, compress_after=hostile, retention=hostile)
    for sql, params in timescaledb_statements(options):
        assert "DROP TABLE" not in sql
        if params and hostile in params:
            assert "%s" in sql
    assert sum(hostile in (p or ()) for _, p in timescaledb_statements(options)) == 3


def test_policies_and_the_extension_are_idempotent() -> None:
    for sql, _ in timescaledb_statements(TimeSeriesOptions()):
        assert "IF NOT EXISTS" in sql or "if_not_exists => true" in sql or \
            sql.startswith("ALTER TABLE readings SET"), sql


def test_the_plain_path_is_one_view_with_the_same_columns() -> None:
    [(sql, params)] = plain_statements()
    assert sql.startswith("CREATE OR REPLACE VIEW readings_hourly AS")
    assert "date_bin('1 hour'" in sql and params is None


@pytest.mark.parametrize(
    ("sqlstate", "message", "reason"),
    [
        (None, ('FATAL:  extension "timescaledb" must be preloaded\nHINT:  Please preload the '
                "timescaledb library via shared_preload_libraries."), NOT_PRELOADED),
        ("XX000", 'extension "timescaledb" must be preloaded', NOT_PRELOADED),
        ("42501", 'permission denied to create extension "timescaledb"', NOT_ALLOWED),
        ("58P01", 'could not access file "$libdir/timescaledb-2.26.4": No such file', None),
        ("XX000", "could not load library: undefined symbol", None),
        ("57P01", "terminating connection due to administrator command", None),
        (None, "", None),
    ],
    ids=["fatal-no-code", "preloaded-text", "privilege", "missing-library", "bad-library",
         "terminated", "empty"],
)
def test_which_extension_failures_fall_back(sqlstate: str | None, message: str,
                                            reason: str | None) -> None:
    assert fallback_reason(sqlstate, message) == reason


def test_fallback_warnings_are_one_line_and_say_what_to_do() -> None:
    for text in (NOT_PRELOADED, NOT_ALLOWED):
        assert "\n" not in text and "plain PostgreSQL" in text
    assert "shared_preload_libraries" in NOT_PRELOADED
    assert "CREATE EXTENSION timescaledb" in NOT_ALLOWED
