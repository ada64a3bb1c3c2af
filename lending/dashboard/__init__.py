"""The loan officers' dashboard: static pages served by the API app, with Chart.js and Leaflet
installed from the npm registry (``make install`` runs ``npm ci`` here) and served from this
process, so nothing is fetched from the network at run time."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles


def mount(app: FastAPI, directory: Path) -> bool:
    static = directory / "static"
    if not static.is_dir():
        return False
    app.mount("/dashboard", StaticFiles(directory=static, html=True), name="dashboard")
    vendor = directory / "node_modules"
    if vendor.is_dir():
        app.mount("/vendor", StaticFiles(directory=vendor), name="vendor")
    return True
