"""The dashboard's static mount: its pages and only the dist folders of its npm libraries, each
with a strict Content-Security-Policy (no inline script, nothing from another origin)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.dashboard import CSP, mount
from pledgewatch.http import create_app
from pledgewatch.settings import Settings


def make_dashboard(root: Path) -> Path:
    (root / "static").mkdir(parents=True)
    (root / "static" / "index.html").write_text("<!doctype html><title>PledgeWatch</title>")
    for package in ("chart.js", "leaflet"):
        (root / "node_modules" / package / "dist").mkdir(parents=True)
        (root / "node_modules" / package / "dist" / "lib.js").write_text("/* lib */")
        (root / "node_modules" / package / "package.json").write_text("{}")
    return root


def test_serves_the_pages_and_only_the_dist_folders_with_a_strict_csp(tmp_path: Path) -> None:
    app = FastAPI()
    assert mount(app, make_dashboard(tmp_path / "dashboard"))
    client = TestClient(app)

    page = client.get("/dashboard/")
    assert page.status_code == 200 and "PledgeWatch" in page.text
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert page.headers["x-content-type-options"] == "nosniff"

    vendor = client.get("/vendor/chart.js/lib.js")
    assert vendor.status_code == 200 and vendor.headers["content-security-policy"] == CSP
    assert client.get("/vendor/chart.js/package.json").status_code == 404  # outside dist
    assert client.get("/vendor/chart.js/../package.json").status_code == 404
    assert client.get("/vendor/chartjs-adapter-date-fns/x.js").status_code == 404  # not installed


def test_no_static_folder_mounts_nothing(tmp_path: Path) -> None:
    app = FastAPI()
    assert not mount(app, tmp_path)
    assert TestClient(app).get("/dashboard/").status_code == 404


def test_the_shipped_page_has_nothing_inline_that_the_csp_would_block() -> None:
    static = Path(__file__).resolve().parents[2] / "api" / "dashboard" / "static"
    html = (static / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html) == []  # inline scripts
    assert re.findall(r"\son[a-z]+\s*=", html) == []  # inline event handlers
    assert re.findall(r"<style|\sstyle\s*=", html) == []  # inline styles
    for js in static.glob("*.js"):
        assert "innerHTML" not in js.read_text(), js.name  # text goes in as text
    for src in ("/vendor/chart.js/chart.umd.min.js", "/vendor/leaflet/leaflet.js", "app.js"):
        assert f'src="{src}"' in html


def test_the_api_docs_load_nothing_from_another_origin() -> None:
    settings = Settings(jwt_secret="d" * 32)  # type: ignore[arg-type]
    client = TestClient(create_app("postgresql://unused/db", settings=settings, live=False))
    html = client.get("/docs").text
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
    assert assets and all(a.startswith("/vendor/swagger-ui-dist/") for a in assets), assets
    assert "https://" not in html and "http://" not in html
    assert client.get(assets[0]).status_code == 200
