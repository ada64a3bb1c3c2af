"""The wrk-output parser of `pledgewatch bench api`, on real output of Debian's wrk 4.1.0."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

import bench.api
from bench.api import (
    BASELINE,
    WrkError,
    WrkResult,
    figure_line,
    parse_wrk,
    ratio_of,
    snapshot,
    snapshot_inputs,
    summarise,
)
from lending.domain.model import ProductTerms
from pledgewatch.settings import load_settings

OK = """\
Running 1s test @ http://127.0.0.1:18001/api/v1/facilities/bench-f-000000/limit
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    11.30ms   10.76ms  58.82ms   84.49%
    Req/Sec   223.05    121.96   454.00     80.00%
  Latency Distribution
     50%    6.82ms
     75%   15.27ms
     90%   27.78ms
     99%   48.47ms
  447 requests in 1.01s, 197.31KB read
Requests/sec:    443.45
Transfer/sec:    195.74KB
"""

NON_2XX = """\
Running 1s test @ http://127.0.0.1:18001/api/v1/alerts
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.72ms    3.56ms  24.32ms   86.01%
    Req/Sec   369.90    106.50   594.00     65.00%
  Latency Distribution
     50%    4.36ms
     75%    6.73ms
     90%   10.75ms
     99%   19.58ms
  743 requests in 1.02s, 237.99KB read
  Non-2xx or 3xx responses: 743
Requests/sec:    730.07
Transfer/sec:    233.85KB
"""

SOCKET_ERRORS = """\
Running 1s test @ http://127.0.0.1:18009/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    43.99us  174.14us   3.33ms   97.72%
    Req/Sec     7.98k     1.23k    9.31k    60.00%
  Latency Distribution
     50%   20.00us
     75%   22.00us
     90%   32.00us
     99%  716.00us
  7957 requests in 1.00s, 310.82KB read
  Socket errors: connect 0, read 15915, write 0, timeout 0
Requests/sec:   7939.72
Transfer/sec:    310.15KB
"""

SLOW = OK.replace("     50%    6.82ms", "     50%    1.02s").replace("     99%   48.47ms",
                                                                       "     99%    2.00m")


def test_requests_per_second_and_percentiles_in_ms() -> None:
    result = parse_wrk(OK)
    assert result == WrkResult(rps=443.45, p50_ms=6.82, p99_ms=48.47, requests=447, non_2xx=0,
                               socket_errors=0)
    result.check("limit")  # no errors: passes


def test_non_2xx_responses_fail_the_run() -> None:
    result = parse_wrk(NON_2XX)
    assert result.non_2xx == 743 and result.requests == 743
    assert result.p50_ms == pytest.approx(4.36) and result.rps == pytest.approx(730.07)
    with pytest.raises(WrkError, match="743 of 743 responses were not 2xx"):
        result.check("alerts")


def test_socket_errors_fail_the_run_and_microseconds_convert() -> None:
    result = parse_wrk(SOCKET_ERRORS)
    assert result.socket_errors == 15915
    assert result.p50_ms == pytest.approx(0.020) and result.p99_ms == pytest.approx(0.716)
    with pytest.raises(WrkError, match="socket errors"):
        result.check("baseline")


def test_seconds_and_minutes_convert() -> None:
    result = parse_wrk(SLOW)
    assert result.p50_ms == pytest.approx(1020.0) and result.p99_ms == pytest.approx(120_000.0)


def test_output_without_latency_distribution_is_refused() -> None:
    without = "\n".join(line for line in OK.splitlines() if "%" not in line or "Stdev" in line)
    with pytest.raises(WrkError, match="50%, 99%"):
        parse_wrk(without)
    with pytest.raises(WrkError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_no_requests_fails_the_run() -> None:
    with pytest.raises(WrkError, match="no requests"):
        parse_wrk(OK.replace("  447 requests in", "  0 requests in")).check("limit")


def test_line_format_ratio_and_medians() -> None:
    rounds = [{"/limit": parse_wrk(OK), "/alerts": parse_wrk(NON_2XX), BASELINE: parse_wrk(OK)},
              {"/limit": parse_wrk(SOCKET_ERRORS), "/alerts": parse_wrk(OK),
               BASELINE: parse_wrk(NON_2XX)}]
    assert ratio_of(rounds[0]) == pytest.approx(443.45 / 443.45)
    medians = summarise(rounds)
    assert medians["/alerts"] == pytest.approx(((730.07 + 443.45) / 2, (4.36 + 6.82) / 2,
                                                (19.58 + 48.47) / 2))
    assert ratio_of(medians) == pytest.approx(((730.07 + 443.45) / 2) / ((443.45 + 730.07) / 2))
    assert figure_line("/alerts", 1234.4, 1.234, 9.876) == "/alerts rps 1234 p50 1.23 ms p99 9.88 ms"


def test_bulk_snapshot_inputs_are_the_engines_shape() -> None:
    snap = snapshot(7, datetime(2026, 1, 2, tzinfo=UTC), 250.0, ProductTerms())
    assert snapshot_inputs(snap) == snap.inputs()
    assert 0 < snap.ltv < 1 and not math.isinf(snap.ltv)


def test_missing_wrk_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench.api, "wrk_binary", lambda: None)
    code = bench.api.run_api_bench(load_settings(), facilities=10, connections=1, duration="1s", threads=1,
                             repeat=1, warmup="1s", workdir=None)
    assert code == 2
    assert "apt-get install wrk" in capsys.readouterr().err
