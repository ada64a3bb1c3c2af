"""A large book: validation linear in its size, progress reported as lots are validated, many
errors summarised, and the bulk device file's rules (no database: pure parsing and files)."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import pytest

from lending.portfolio_file import (
    PROGRESS_EVERY,
    LotIn,
    PortfolioError,
    PortfolioIn,
    parse_portfolio,
    read_portfolio,
)
from telemetry.provisioning import (
    DeviceError,
    create_secret_file,
    mosquitto_password_line,
    read_devices_csv,
)

HEADER = "id,facility,commodity,declared_quantity,unit_weight_kg,registration_no,sensors\n"


def lots_csv(n: int, start: int = 0) -> str:
    return HEADER + "".join(f"lot-{i},fac-{i % 7},wheat,{100 + i % 9},25,ZDW-{i:07d},"
                            f"wh-{i};rfid-{i}\n" for i in range(start, start + n))


def test_the_duplicate_id_check_is_linear() -> None:
    lots = [LotIn.model_construct(id=f"lot-{i}", facility="f", commodity="w", declared_quantity=1,
                                  unit_weight_kg=1, registration_no=f"R{i}") for i in range(50_000)]
    started = time.perf_counter()
    PortfolioIn(lots=lots)  # a list.count per id took minutes here
    assert time.perf_counter() - started < 2.0
    with pytest.raises(ValueError, match="lots: listed twice: lot-7, lot-9"):
        PortfolioIn(lots=[*lots, lots[9], lots[7], lots[9]])


def test_progress_is_reported_as_lots_are_validated() -> None:
    calls: list[tuple[int, int]] = []
    portfolio = parse_portfolio(lots_csv(2_500), "csv", lambda done, total: calls.append((done, total)))
    assert len(portfolio.lots) == 2_500
    assert calls == [(PROGRESS_EVERY, 2_500), (2 * PROGRESS_EVERY, 2_500), (2_500, 2_500)]
    assert portfolio.lots[2_499].sensors == ("wh-2499", "rfid-2499")


def test_five_thousand_lots_validate_in_well_under_a_second_each_thousand() -> None:
    started = time.perf_counter()
    assert len(parse_portfolio(lots_csv(5_000), "csv").lots) == 5_000
    assert time.perf_counter() - started < 5.0


def test_many_bad_lots_are_summarised_not_listed_one_by_one() -> None:
    text = HEADER + "".join(f"lot-{i},f1,wheat,-1,25,R{i},\n" for i in range(500))
    with pytest.raises(PortfolioError) as info:
        parse_portfolio(text, "csv")
    message = str(info.value)
    assert "lots.0.declared_quantity" in message and "lots.19.declared_quantity" in message
    assert "lots.20." not in message and "... and 480 more" in message


def test_errors_in_the_rest_of_a_yaml_book_and_its_lots_are_both_named() -> None:
    doc = ("facilities:\n  - {id: f1, borrower: b1, line: -5}\nlots:\n"
           "  - {id: l1, facility: f1, commodity: w, declared_quantity: 1, unit_weight_kg: 1,"
           " registration_no: 'x y'}\n  - 7\n")
    with pytest.raises(PortfolioError) as info:
        parse_portfolio(doc, "yaml")
    assert "facilities.0.line" in str(info.value) and "lots.1" in str(info.value)


def test_a_csv_is_streamed_and_the_cap_is_the_callers(tmp_path: Path) -> None:
    path = tmp_path / "lots.csv"
    path.write_text(lots_csv(300), encoding="utf-8")
    assert len(read_portfolio(path, max_bytes=path.stat().st_size).lots) == 300
    with pytest.raises(PortfolioError, match="larger than 0 MiB"):
        read_portfolio(path, max_bytes=path.stat().st_size - 1)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(lots_csv(2_000).encode() + b"l,f,w,1,1,R\xff,\n")  # bad bytes past 8 KiB
    with pytest.raises(PortfolioError, match="not UTF-8"):
        read_portfolio(bad)


# --- the bulk device file -----------------------------------------------------------------------

BAD_DEVICE_FILES = {
    "empty": ("", "missing columns"),
    "header-only": ("device_id,tenant,kind\n", "no devices"),
    "missing-column": ("device_id,tenant\nd1,acme\n", "missing columns: kind"),
    "extra-column": ("device_id,tenant,kind,colour\nd1,acme,x,red\n", "the header is"),
    "short-row": ("device_id,tenant,kind\nd1,acme\n", "line 2: expected 3 fields"),
    "long-row": ("device_id,tenant,kind\nd1,acme,x,y\n", "line 2: expected 3 fields"),
    "duplicate": ("device_id,tenant,kind\nd1,a,x\nd2,a,x\nd1,a,x\n", "listed twice: d1"),
    "sql-id": ("device_id,tenant,kind\n\"x'; DROP TABLE devices;--\",a,x\n", "line 2: device id"),
    "bad-tenant": ("device_id,tenant,kind\nd1,a/b,x\n", "line 2: tenant"),
    "wildcard-id": ("device_id,tenant,kind\nd+1,a,x\n", "device id"),
    "empty-kind": ("device_id,tenant,kind\nd1,a,\n", "line 2: kind"),
    "huge-field": ("device_id,tenant,kind\n" + "d" * 200_000 + ",a,x\n", "not a valid CSV"),
    "nul": ("device_id,tenant,kind\nd\x001,a,x\n", "line 2"),
}


@pytest.mark.parametrize(("text", "expected"), list(BAD_DEVICE_FILES.values()),
                         ids=list(BAD_DEVICE_FILES))
def test_a_bad_device_file_is_one_line(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DeviceError) as info:
        read_devices_csv(path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 400


def test_a_device_file_reads_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("kind,device_id,tenant\nvehicle,truck-1,acme\n", encoding="utf-8")
    (d,) = read_devices_csv(path)
    assert (d.device_id, d.tenant, d.kind) == ("truck-1", "acme", "vehicle")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"device_id,tenant,kind\nd\xe91,a,x\n")
    with pytest.raises(DeviceError, match="not UTF-8"):
        read_devices_csv(latin)
    with pytest.raises(DeviceError, match="no such file"):
        read_devices_csv(tmp_path / "absent.csv")


def test_the_mosquitto_line_is_pbkdf2_sha512_as_mosquitto_passwd_writes_it() -> None:
    line = mosquitto_password_line("wh-1", "s3cret")
    user, rest = line.split(":", 1)
    _, version, iterations, salt, digest = rest.split("$")
    assert (user, version, iterations) == ("wh-1", "7", "101")
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", base64.b64decode(salt), 101)
    assert base64.b64decode(digest) == expected
    assert mosquitto_password_line("wh-1", "s3cret") != line, "a fresh salt each time"


def test_a_secret_file_is_new_and_private(tmp_path: Path) -> None:
    path = tmp_path / "creds.csv"
    create_secret_file(path, ["a,b", "c,d"])
    assert path.read_text() == "a,b\nc,d\n"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(DeviceError, match="exists; refusing to overwrite"):
        create_secret_file(path, ["x"])
    assert path.read_text() == "a,b\nc,d\n"
