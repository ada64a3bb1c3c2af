"""Telemetry of the devices a caller may see: the latest value of each metric, and a bucketed
series (min/max/avg/count per ``date_bin`` bucket) of one metric for a device or for a lot's
sensors. Time ranges and bucket sizes are validated and capped so that no request scans or
returns more than a bounded amount."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api import scoped_reads
from api.deps import ConnDep, CurrentPrincipal, Page, PageDep
from api.problems import ApiProblem, not_found, responses
from api.schemas import (
    DeviceId,
    DeviceLatest,
    DeviceSeries,
    Instant,
    LotSeries,
    Metric,
    Slug,
)
from telemetry.queries import bucketed_series

router = APIRouter(prefix="/telemetry", tags=["telemetry"])

MAX_RANGE = timedelta(days=366)
MAX_BUCKETS = 5000
MAX_LOT_DEVICES = 50

DevicePath = Annotated[DeviceId, Path(description="device id")]
LotPath = Annotated[Slug, Path(description="lot id")]
MetricQuery = Annotated[Metric, Query(description="a metric of the catalogue")]
StartQuery = Annotated[Instant | None, Query(description="from (inclusive); default end − 24 h")]
EndQuery = Annotated[Instant | None, Query(description="to (exclusive); default now")]
BucketQuery = Annotated[int, Query(ge=1, le=31 * 86400, description="bucket width in seconds")]


@router.get("/latest", response_model=Page[DeviceLatest], responses=responses(401, 422))
def latest(conn: ConnDep, principal: CurrentPrincipal, page: PageDep,
           lot_id: Annotated[Slug | None, Query()] = None,
           facility_id: Annotated[Slug | None, Query()] = None) -> Page[Any]:
    """Each visible device with its status and the newest value of every metric it reports."""
    return page.page(scoped_reads.latest_by_device(conn, principal.scope, page.limit + 1, page.offset,
                                              lot_id=lot_id, facility_id=facility_id))


@router.get("/devices/{device_id}/latest", response_model=DeviceLatest,
            responses=responses(401, 404, 422))
def device_latest(conn: ConnDep, principal: CurrentPrincipal,
                  device_id: DevicePath) -> dict[str, Any]:
    rows = scoped_reads.latest_by_device(conn, principal.scope, 1, 0, device_id=device_id)
    if not rows:
        raise not_found("device", device_id)
    return rows[0]


def _window(start: datetime | None, end: datetime | None, bucket_s: int) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=1)
    if start >= end:
        raise ApiProblem(422, "start must be before end")
    if end - start > MAX_RANGE:
        raise ApiProblem(422, f"the time range may span at most {MAX_RANGE.days} days")
    if (end - start) / timedelta(seconds=bucket_s) > MAX_BUCKETS:
        raise ApiProblem(422, f"at most {MAX_BUCKETS} buckets: widen bucket_s or narrow the range")
    return start, end


def _series(conn: ConnDep, device_id: str, metric: str, start: datetime, end: datetime,
            bucket_s: int) -> dict[str, Any]:
    buckets = bucketed_series(conn, device_id, metric, start, end, timedelta(seconds=bucket_s))
    return {"device_id": device_id, "metric": metric, "start": start, "end": end,
            "bucket_s": bucket_s, "buckets": buckets}


@router.get("/devices/{device_id}/series", response_model=DeviceSeries,
            responses=responses(401, 404, 422))
def device_series(conn: ConnDep, principal: CurrentPrincipal, device_id: DevicePath,
                  metric: MetricQuery, start: StartQuery = None, end: EndQuery = None,
                  bucket_s: BucketQuery = 300) -> dict[str, Any]:
    """min/max/avg/count of one metric of one device per bucket."""
    if scoped_reads.device(conn, principal.scope, device_id) is None:
        raise not_found("device", device_id)
    start, end = _window(start, end, bucket_s)
    return _series(conn, device_id, metric, start, end, bucket_s)


@router.get("/lots/{lot_id}/series", response_model=LotSeries,
            responses=responses(401, 404, 422))
def lot_series(conn: ConnDep, principal: CurrentPrincipal, lot_id: LotPath, metric: MetricQuery,
               start: StartQuery = None, end: EndQuery = None,
               bucket_s: BucketQuery = 300) -> dict[str, Any]:
    """One metric of each sensor bound to the lot, bucketed (a series per device)."""
    device_ids = scoped_reads.lot_device_ids(conn, principal.scope, lot_id)
    if device_ids is None:
        raise not_found("lot", lot_id)
    start, end = _window(start, end, bucket_s)
    return {"lot_id": lot_id, "metric": metric, "start": start, "end": end, "bucket_s": bucket_s,
            "devices": [_series(conn, d, metric, start, end, bucket_s)
                        for d in device_ids[:MAX_LOT_DEVICES]]}
