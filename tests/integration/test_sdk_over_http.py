"""The enterprise SDK over the wire: a real `pledgewatch serve` process on a free port, against a
real database holding the two-supplier chain of tests/data/portfolio.yaml (core enterprise
``core-mill``, suppliers ``sup-grain`` and ``sup-metal``), each enterprise with its own API key,
used as an enterprise's systems would use it:

* a drawdown whose answer is lost on the way back is retried by the SDK with the same
  Idempotency-Key: one drawdown, outstanding up once;
* a supplier posts a receivable on the core enterprise, the core confirms it with its own key,
  the supplier transfers part of the voucher down to its own supplier, who finances it, and the
  core pays at maturity;
* every read an enterprise makes parses into the SDK's models, and another tenant's ids are
  not found.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from pledgewatch_sdk import (
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    new_idempotency_key,
    paginate,
)

from api.accounts import issue_api_key
from lending import financing
from lending.engine import LendingEngine
from lending.operations import load_portfolio
from lending.portfolio_file import read_portfolio
from telemetry.contract.payload import Accepted, DeviceInfo, Reading
from telemetry.queries import register_devices
from telemetry.writer import Batch, write_batch
from tests.conftest import DB_KINDS
from tests.support import PgServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PORTFOLIO = ROOT / "tests" / "data" / "portfolio.yaml"
CORE, A, B = "core-mill", "sup-grain", "sup-metal"
FAC = {A: "fac-grain", B: "fac-metal"}
PROGRAMME = "mill-chain"
LISTENING = re.compile(r"api: (http://127\.0\.0\.1:\d+)/docs")


@dataclass(frozen=True)
class Server:
    url: str  # the API's base URL
    database_url: str
    key: dict[str, str]  # borrower -> its API key

    def client(self, borrower: str, transport: httpx.BaseTransport | None = None) -> Client:
        # trust_env=False: no HTTP(S)_PROXY of the machine between the test and the server
        return Client(self.url, self.key[borrower], timeout=10, backoff=0.05, trust_env=False,
                      transport=transport)


def populate(url: str) -> dict[str, str]:
    """The portfolio, live weights on sup-grain's lots and a limit from a real engine pass (no
    alert holding its drawdowns), the core's programme line, and an API key per enterprise."""
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        register_devices(conn, [DeviceInfo(d, "acme", "warehouse") for d in
                                ("wh-t-0001", "rfid-t-0001", "wh-t-0002", "trk-t-0001")])
        load_portfolio(conn, read_portfolio(PORTFOLIO), now)
    accepted = [
        Accepted(device, "acme", 1, i, now - timedelta(seconds=30 - i), now,
                 (Reading("weight_kg", units * 1000.0 + i % 3), *extra))
        for device, units, extra in (("wh-t-0001", 100, (Reading("rfid_count", 100),)),
                                     ("wh-t-0002", 40, ()))
        for i in range(30)]
    with psycopg.connect(url) as conn:
        write_batch(conn, Batch(accepted=accepted))
    engine = LendingEngine(url)
    engine.recompute()
    engine.close()
    keys = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE alerts SET status = 'resolved', resolved_at = now(), resolved_by ="
                     " 'test', comment = 'test' WHERE facility_id = %s", (FAC[A],))
        financing.create_programme(conn, PROGRAMME, CORE, "CNY", 250_000, 0.8, "officer", now)
        for borrower in (CORE, A, B):
            key, _row = issue_api_key(conn, borrower, f"{borrower} ERP", "admin")
            keys[borrower] = key.secret
    return keys


def serve(database_url: str, state_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`pledgewatch serve` on a free port (HTTP_PORT=0); its base URL from the line it logs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PLEDGEWATCH_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PLEDGEWATCH_DATABASE_URL=database_url, PLEDGEWATCH_STATE_DIR=str(state_dir),
               PLEDGEWATCH_NOTIFIER_ENABLED="false", PLEDGEWATCH_HTTP_HOST="127.0.0.1",
               PLEDGEWATCH_HTTP_PORT="0", PLEDGEWATCH_JWT_SECRET="sdk-test-" + "j" * 40,
               PLEDGEWATCH_LOG_LEVEL="WARNING")
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "pledgewatch", "serve"], cwd=ROOT,
                                   env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            try:
                if httpx.get(f"{found[1]}/health", timeout=2, trust_env=False).status_code == 200:
                    return process, found[1]
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    stop(process)
    raise AssertionError(f"pledgewatch serve did not come up:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


@pytest.fixture(scope="module")
def server(pg_servers: dict[str, PgServer], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    pg = pg_servers[DB_KINDS[-1]]  # one database kind is enough: the SDK speaks HTTP
    url = pg.migrated_database()
    work = tmp_path_factory.mktemp("sdk-serve")
    try:
        keys = populate(url)
        process, base = serve(url, work / "state", work / "serve.log")
        try:
            yield Server(base, url, keys)
        finally:
            stop(process)
    finally:
        pg.drop(url)


class LoseAnswers(httpx.BaseTransport):
    """The network between the enterprise and the API, losing the answer to the first request
    to ``path``: the API gets the request and acts on it, the client sees a read timeout."""

    def __init__(self, path: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.path = path
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == self.path:
            self.sent.append(request)
            if len(self.sent) == 1:
                response.read()
                response.close()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def outstanding(database_url: str, facility_id: str) -> float:
    """The facility's outstanding as the ledger has it now (GET .../limit reports the latest limit
    snapshot's, which follows at the engine's next pass: no engine runs here)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT outstanding FROM facilities WHERE facility_id = %s",
                           (facility_id,)).fetchone()
    assert row is not None
    return float(row[0])


def drawdowns_with_key(database_url: str, key: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM drawdowns WHERE idempotency_key = %s",
                           (key,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_drawdown_whose_answer_was_lost_is_retried_and_paid_once(server: Server) -> None:
    network = LoseAnswers("/api/v1/drawdowns")
    with server.client(A, transport=network) as pw:
        limit = pw.limit(FAC[A])
        assert limit.available is not None and limit.available > 10_000, limit
        before = outstanding(server.database_url, FAC[A])
        drawdown = pw.request_drawdown(FAC[A], 10_000, "CNY", tenor_days=90, purpose="buy wheat")
        assert drawdown.status == "approved" and drawdown.decided_by == "auto", drawdown
        assert drawdown.borrower_id == A and drawdown.maturity is not None

        assert len(network.sent) == 2, "the SDK retried the request whose answer was lost"
        keys = {r.headers["Idempotency-Key"] for r in network.sent}
        assert len(keys) == 1, "the retry carried the same Idempotency-Key"
        assert drawdowns_with_key(server.database_url, keys.pop()) == 1
        assert outstanding(server.database_url, FAC[A]) == before + 10_000, "paid once"

    with server.client(A) as pw:
        # the enterprise's own retry, later, with the key it kept: the same drawdown again
        key = new_idempotency_key()
        first = pw.request_drawdown(FAC[A], 500, "CNY", 30, "freight", idempotency_key=key)
        again = pw.request_drawdown(FAC[A], 500, "CNY", 30, "freight", idempotency_key=key)
        assert again.drawdown_id == first.drawdown_id
        with pytest.raises(InvalidRequest, match="Idempotency-Key"):
            pw.request_drawdown(FAC[A], 900, "CNY", 30, "freight", idempotency_key=key)
        assert drawdowns_with_key(server.database_url, key) == 1
        assert pw.drawdown(first.drawdown_id).amount == 500
        mine = {d.drawdown_id for d in paginate(pw.drawdowns, facility_id=FAC[A], limit=2)}
        assert {drawdown.drawdown_id, first.drawdown_id} <= mine
        repaid = pw.repay(FAC[A], 500)
        assert repaid.allocation and repaid.outstanding == outstanding(server.database_url, FAC[A])

    with server.client(B) as other, pytest.raises(NotFound):
        other.drawdown(first.drawdown_id)


def test_a_payable_confirmed_by_the_core_flows_down_the_chain(server: Server) -> None:
    due = datetime.now(UTC) + timedelta(days=60)
    with server.client(B) as metal, server.client(CORE) as core, server.client(A) as grain:
        invoice = metal.post_receivable(FAC[B], "Example Flour Mill Group", 100_000, due=due,
                                        debtor_id=CORE)
        assert invoice.verified is False and invoice.debtor_id == CORE

        # the core enterprise sees what it owes and confirms it with its own key; the supplier cannot
        owed = {r.receivable_id for r in paginate(core.receivables)}
        assert invoice.receivable_id in owed
        with pytest.raises(NotFound):
            metal.confirm_receivable(invoice.receivable_id)
        root = core.confirm_receivable(invoice.receivable_id)
        assert (root.holder_id, root.amount, root.tier, root.status) == (B, 100_000, 1, "active")
        assert root.confirmation.debtor_id == CORE and root.programme_id == PROGRAMME
        with pytest.raises(Conflict):
            core.confirm_receivable(invoice.receivable_id)
        assert metal.programme(PROGRAMME).used == 100_000

        # tier 1 passes 40,000 down to its own supplier (tier 2) and keeps 60,000
        with pytest.raises(InvalidRequest) as invalid:
            metal.transfer_voucher(root.voucher_id, to=A, amount=100_000.01)
        assert invalid.value.status == 422
        part = metal.transfer_voucher(root.voucher_id, to=A, amount=40_000)
        assert (part.holder_id, part.amount, part.tier) == (A, 40_000, 2)
        assert [s.holder_id for s in part.path] == [B, A]
        assert part.path[0].voucher_id == root.voucher_id
        assert part.confirmation.receivable_id == invoice.receivable_id
        with pytest.raises(Conflict, match="spent"):
            metal.transfer_voucher(root.voucher_id, to=A, amount=1)
        kept = metal.vouchers(status="active", holder_id=B).items
        assert [(v.holder_id, v.amount) for v in kept] == [(B, 60_000)]

        # tier 2 finances its part at the programme's advance rate
        financed = grain.finance_voucher(part.voucher_id)
        assert (financed.status, financed.financed_amount) == ("financed", 32_000)
        assert grain.voucher(part.voucher_id).path[-1].holder_id == A

        chain = core.chain(PROGRAMME)
        assert {m.borrower_id for m in chain.members} == {CORE, A, B}
        assert len(chain.vouchers) == 3
        assert [p.programme_id for p in core.programmes()] == [PROGRAMME]

        # at maturity the core pays: the bank gets what it financed, holders the rest
        payment = core.pay_payable(root.voucher_id, 100_000)
        assert sorted((p.payee, p.amount) for p in payment.payouts) == sorted(
            [(A, 8_000), (B, 60_000), ("bank", 32_000)])


def test_every_read_of_an_enterprise_parses_into_the_sdk_models(server: Server) -> None:
    """The models hold what the real API answers, not only what its schema says."""
    with server.client(A) as pw:
        assert pw.me().borrower_id == A
        facilities = pw.facilities().items
        assert [f.facility_id for f in facilities] == [FAC[A]]
        assert pw.facility(FAC[A]).facility_id == FAC[A]
        history = pw.limit_history(FAC[A]).items
        assert history, "the engine's pass made a snapshot"
        assert pw.explain_limit(FAC[A], history[0].id).explanation
        assert pw.borrower(A).role == "supplier" and len(pw.borrowers().items) == 1
        lots = pw.lots(facility_id=FAC[A]).items
        assert {lot.lot_id for lot in lots} == {"lot-wheat-1", "lot-wheat-2"}
        assert pw.lot("lot-wheat-1").pledge is not None
        assert pw.inspections("lot-wheat-1").items == []
        alerts = pw.alerts(facility_id=FAC[A]).items
        if alerts:
            assert pw.alert(alerts[0].id).facility_id == FAC[A]
        assert {d.device_id for d in pw.devices(facility_id=FAC[A]).items} >= {"wh-t-0001"}
        assert pw.device("wh-t-0001").lot_id == "lot-wheat-1"
        assert pw.latest_readings(lot_id="lot-wheat-1").items
        assert "weight_kg" in pw.device_latest("wh-t-0001").readings
        assert pw.device_series("wh-t-0001", "weight_kg", bucket_s=60).buckets
        assert pw.lot_series("lot-wheat-1", "weight_kg", bucket_s=60).devices
        release = pw.request_release("lot-wheat-2", 1)
        assert release.status == "requested" and pw.release(release.release_id).quantity == 1
        assert [r.release_id for r in pw.releases(lot_id="lot-wheat-2").items] == [release.release_id]
        sale = pw.post_sale(FAC[A], 1_234.5)
        assert sale.id in {s.id for s in pw.sales(facility_id=FAC[A]).items}
        assert {p.commodity for p in pw.prices().items} >= {"wheat"}
        for other in ("fac-metal", "lot-copper-1"):
            with pytest.raises(NotFound):
                (pw.limit if other.startswith("fac") else pw.lot)(other)
